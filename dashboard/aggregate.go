package dashboard

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Bounds on what one region may make the aggregator remember, whatever the
// devices send. Beyond them new names are folded or ignored and counted.
const (
	// maxMetricSeries is how many distinct metric names a region tracks;
	// readings' further metrics are skipped (counted in skippedMetrics).
	maxMetricSeries = 256
	// maxReasons is how many distinct dead-letter reasons a region
	// tracks; further ones are counted under otherReason.
	maxReasons  = 64
	otherReason = "other"
	// latencySamples is the size of each region's ring of latency samples.
	latencySamples = 2048
	// metricSamples is the size of each metric series' ring of values, of
	// which p95 is computed: above metricSamples/window values per second
	// in one series, p95 is that of the latest metricSamples values.
	metricSamples = 512
)

// aggregator keeps the live aggregates behind the snapshot. Every method
// takes the current time, so the tests drive the clock.
type aggregator struct {
	mu          sync.Mutex
	window      int64 // seconds
	active      time.Duration
	startSec    int64
	order       []string
	regions     map[string]*regionAgg
	other       uint64
	undecodable uint64
	skipped     uint64 // metrics beyond maxMetricSeries
}

type regionAgg struct {
	total         uint64
	perSec        []countSlot
	devices       map[string]int64 // device -> unix ms last seen
	phones        map[string]int64 // the devices of type phone among them
	lat           latencyRing
	lastReading   int64 // unix ms of the latest reading; 0 before the first
	metrics       map[seriesKey]*series
	rejected      map[string]uint64
	rejectedTotal uint64
	dlState       string
	// dlDownSince is when the region's DEADLETTER stopped answering (unix
	// ms), 0 while it answers or before it was first asked.
	dlDownSince int64
}

// seriesKey names one metric of one device type.
type seriesKey struct{ deviceType, name string }

// series aggregates one metric of one device type in one region: per-second
// slots for count, avg, min and max, and a ring of recent values for p95.
type series struct {
	slots   []statSlot
	samples []valueSample
	next    int
}

type valueSample struct {
	sec int64 // 0 for an empty slot
	v   float64
}

// countSlot counts readings that arrived in one unix second.
type countSlot struct {
	sec int64
	n   uint64
}

// statSlot aggregates one metric's values that arrived in one unix second.
type statSlot struct {
	sec           int64
	n             uint64
	sum, min, max float64
}

func newAggregator(regions []string, window, active time.Duration, now time.Time) *aggregator {
	a := &aggregator{
		window:   max(int64(window/time.Second), 1),
		active:   active,
		startSec: now.Unix(),
		order:    slices.Clone(regions),
		regions:  make(map[string]*regionAgg, len(regions)),
	}
	for _, r := range regions {
		a.regions[r] = &regionAgg{
			perSec:   make([]countSlot, a.window+1),
			devices:  map[string]int64{},
			phones:   map[string]int64{},
			lat:      latencyRing{buf: make([]latencySample, latencySamples)},
			metrics:  map[seriesKey]*series{},
			rejected: map[string]uint64{},
			dlState:  "connecting",
		}
	}
	return a
}

// addReading records one reading of device (of deviceType) in region that
// arrived at now, stamped ts (unix ms) by the device. It reports whether
// region is known and returns the end-to-end latency (zero when the device
// clock is ahead).
func (a *aggregator) addReading(now time.Time, region, deviceType, device string, ts int64, metrics []protocol.Metric) (time.Duration, bool) {
	nowMS := now.UnixMilli()
	lat := time.Duration(max(nowMS-ts, 0)) * time.Millisecond
	sec := now.Unix()

	a.mu.Lock()
	defer a.mu.Unlock()
	ra := a.regions[region]
	if ra == nil {
		a.other++
		return lat, false
	}
	ra.total++
	slot := &ra.perSec[sec%int64(len(ra.perSec))]
	if slot.sec != sec {
		*slot = countSlot{sec: sec}
	}
	slot.n++
	if _, seen := ra.devices[device]; seen {
		ra.devices[device] = nowMS
	} else {
		ra.devices[strings.Clone(device)] = nowMS
	}
	if deviceType == devicecred.PhoneType {
		if _, seen := ra.phones[device]; seen {
			ra.phones[device] = nowMS
		} else {
			ra.phones[strings.Clone(device)] = nowMS
		}
	}
	ra.lat.add(nowMS, float64(lat)/float64(time.Millisecond))
	ra.lastReading = nowMS
	for _, m := range metrics {
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			continue
		}
		key := seriesKey{deviceType, m.Name}
		sr, ok := ra.metrics[key]
		if !ok {
			if len(ra.metrics) >= maxMetricSeries {
				a.skipped++
				continue
			}
			sr = &series{slots: make([]statSlot, a.window), samples: make([]valueSample, metricSamples)}
			ra.metrics[seriesKey{strings.Clone(deviceType), strings.Clone(m.Name)}] = sr
		}
		s := &sr.slots[sec%int64(len(sr.slots))]
		if s.sec != sec || s.n == 0 {
			*s = statSlot{sec: sec, min: m.Value, max: m.Value}
		}
		s.n++
		s.sum += m.Value
		s.min = min(s.min, m.Value)
		s.max = max(s.max, m.Value)
		sr.samples[sr.next] = valueSample{sec: sec, v: m.Value}
		sr.next = (sr.next + 1) % len(sr.samples)
	}
	return lat, true
}

// addUndecodable counts a READINGS message that could not be parsed.
func (a *aggregator) addUndecodable() {
	a.mu.Lock()
	a.undecodable++
	a.mu.Unlock()
}

// addDeadLetter counts one rejected payload of region. It returns the
// reason it was counted under (otherReason beyond maxReasons), or "" if
// region is unknown.
func (a *aggregator) addDeadLetter(region, reason string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ra := a.regions[region]
	if ra == nil {
		return ""
	}
	if _, ok := ra.rejected[reason]; !ok && len(ra.rejected) >= maxReasons {
		reason = otherReason
	}
	ra.rejected[reason]++
	ra.rejectedTotal++
	return reason
}

// setDeadLetterState records at now whether region's DEADLETTER can be
// read ("ok") or not (what is wrong). "connecting" is neither: the first
// attempt has not answered yet. It is how the page knows that a region is
// unreachable, and since when.
func (a *aggregator) setDeadLetterState(now time.Time, region, state string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ra := a.regions[region]
	if ra == nil {
		return
	}
	ra.dlState = state
	switch {
	case state == "ok" || state == "connecting":
		ra.dlDownSince = 0
	case ra.dlDownSince == 0:
		ra.dlDownSince = now.UnixMilli()
	}
}

// snapshot fills the per-region part of a Snapshot as of now, and forgets
// devices that are no longer active.
func (a *aggregator) snapshot(now time.Time, s *Snapshot) {
	sec := now.Unix()
	nowMS := now.UnixMilli()
	activeSince := nowMS - a.active.Milliseconds()
	latSince := nowMS - a.window*1000

	a.mu.Lock()
	defer a.mu.Unlock()
	s.WindowSeconds = float64(a.window)
	s.OtherReadings = a.other
	s.Undecodable = a.undecodable
	s.Regions = make([]RegionSnapshot, 0, len(a.order))

	// The rate counts the last full seconds, not the one in progress; while
	// the dashboard is younger than the window it divides by its age.
	span := min(a.window, sec-a.startSec)
	var scratch, values []float64
	for _, name := range a.order {
		ra := a.regions[name]
		rs := RegionSnapshot{
			Region:        name,
			Total:         ra.total,
			Rejected:      make(map[string]uint64, len(ra.rejected)),
			RejectedTotal: ra.rejectedTotal,
			DeadLetters:   ra.dlState,
			Reachable:     ra.dlState == "ok",
			Metrics:       []MetricStats{},
		}
		if ra.dlDownSince != 0 {
			rs.UnreachableSince = time.UnixMilli(ra.dlDownSince).UTC()
		}
		if ra.lastReading != 0 {
			rs.LastReading = time.UnixMilli(ra.lastReading).UTC()
		}
		if span > 0 {
			var n uint64
			for _, c := range ra.perSec {
				if c.sec >= sec-span && c.sec < sec {
					n += c.n
				}
			}
			rs.Rate = float64(n) / float64(span)
		}
		for d, last := range ra.devices {
			if last >= activeSince {
				rs.ActiveDevices++
			} else {
				delete(ra.devices, d)
			}
		}
		for d, last := range ra.phones {
			if last >= activeSince {
				rs.ActivePhones++
			} else {
				delete(ra.phones, d)
			}
		}
		scratch = ra.lat.since(latSince, scratch[:0])
		rs.Latency = percentiles(scratch)
		for reason, n := range ra.rejected {
			rs.Rejected[reason] = n
		}
		for key, sr := range ra.metrics {
			ms := MetricStats{DeviceType: key.deviceType, Name: key.name, Min: math.Inf(1), Max: math.Inf(-1)}
			var sum float64
			for _, sl := range sr.slots {
				if sl.n == 0 || sl.sec <= sec-a.window || sl.sec > sec {
					continue
				}
				ms.Count += sl.n
				sum += sl.sum
				ms.Min = min(ms.Min, sl.min)
				ms.Max = max(ms.Max, sl.max)
			}
			if ms.Count == 0 {
				continue
			}
			ms.Avg = sum / float64(ms.Count)
			values = values[:0]
			for _, v := range sr.samples {
				if v.sec > sec-a.window && v.sec <= sec {
					values = append(values, v.v)
				}
			}
			ms.P95 = percentile(values, 0.95)
			rs.Metrics = append(rs.Metrics, ms)
		}
		sort.Slice(rs.Metrics, func(i, j int) bool {
			if rs.Metrics[i].Name != rs.Metrics[j].Name {
				return rs.Metrics[i].Name < rs.Metrics[j].Name
			}
			return rs.Metrics[i].DeviceType < rs.Metrics[j].DeviceType
		})
		s.Regions = append(s.Regions, rs)
	}
}

// latencyRing keeps the latest latency samples of a region, overwriting the
// oldest: a fixed cost per reading whatever the rate.
type latencyRing struct {
	buf  []latencySample
	next int
}

type latencySample struct {
	at int64 // unix ms of arrival; 0 for an empty slot
	ms float64
}

func (r *latencyRing) add(at int64, ms float64) {
	r.buf[r.next] = latencySample{at: at, ms: ms}
	r.next = (r.next + 1) % len(r.buf)
}

// since appends to dst the samples that arrived at or after since.
func (r *latencyRing) since(since int64, dst []float64) []float64 {
	for _, s := range r.buf {
		if s.at != 0 && s.at >= since {
			dst = append(dst, s.ms)
		}
	}
	return dst
}

// percentiles sorts v and returns its p50 and p99 by nearest rank.
func percentiles(v []float64) Latency {
	if len(v) == 0 {
		return Latency{}
	}
	slices.Sort(v)
	return Latency{P50: rank(v, 0.50), P99: rank(v, 0.99), Samples: len(v)}
}

// percentile sorts v and returns its p-quantile by nearest rank, 0 for none.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return rank(v, p)
}

// rank is the nearest-rank p-quantile of the sorted, non-empty v.
func rank(v []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}
