package dashboard

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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
	lat           latencyRing
	metrics       map[string][]statSlot
	rejected      map[string]uint64
	rejectedTotal uint64
	dlState       string
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
			lat:      latencyRing{buf: make([]latencySample, latencySamples)},
			metrics:  map[string][]statSlot{},
			rejected: map[string]uint64{},
			dlState:  "connecting",
		}
	}
	return a
}

// addReading records one reading of device in region that arrived at now,
// stamped ts (unix ms) by the device. It reports whether region is known
// and returns the end-to-end latency (zero when the device clock is ahead).
func (a *aggregator) addReading(now time.Time, region, device string, ts int64, metrics []protocol.Metric) (time.Duration, bool) {
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
	ra.lat.add(nowMS, float64(lat)/float64(time.Millisecond))
	for _, m := range metrics {
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			continue
		}
		ring, ok := ra.metrics[m.Name]
		if !ok {
			if len(ra.metrics) >= maxMetricSeries {
				a.skipped++
				continue
			}
			ring = make([]statSlot, a.window)
			ra.metrics[strings.Clone(m.Name)] = ring
		}
		s := &ring[sec%int64(len(ring))]
		if s.sec != sec || s.n == 0 {
			*s = statSlot{sec: sec, min: m.Value, max: m.Value}
		}
		s.n++
		s.sum += m.Value
		s.min = min(s.min, m.Value)
		s.max = max(s.max, m.Value)
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

// setDeadLetterState records whether region's DEADLETTER can be read.
func (a *aggregator) setDeadLetterState(region, state string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ra := a.regions[region]; ra != nil {
		ra.dlState = state
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
	var scratch []float64
	for _, name := range a.order {
		ra := a.regions[name]
		rs := RegionSnapshot{
			Region:        name,
			Total:         ra.total,
			Rejected:      make(map[string]uint64, len(ra.rejected)),
			RejectedTotal: ra.rejectedTotal,
			DeadLetters:   ra.dlState,
			Metrics:       []MetricStats{},
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
		scratch = ra.lat.since(latSince, scratch[:0])
		rs.Latency = percentiles(scratch)
		for reason, n := range ra.rejected {
			rs.Rejected[reason] = n
		}
		for metric, ring := range ra.metrics {
			ms := MetricStats{Name: metric, Min: math.Inf(1), Max: math.Inf(-1)}
			var sum float64
			for _, sl := range ring {
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
			rs.Metrics = append(rs.Metrics, ms)
		}
		sort.Slice(rs.Metrics, func(i, j int) bool { return rs.Metrics[i].Name < rs.Metrics[j].Name })
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
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[min(max(i, 0), len(v)-1)]
	}
	return Latency{P50: rank(0.50), P99: rank(0.99), Samples: len(v)}
}
