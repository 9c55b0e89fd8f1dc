package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

var t0 = time.Unix(1764100000, 0) // a whole second

type reading struct {
	at     time.Duration // arrival, after t0
	region string
	device string
	lag    time.Duration // arrival minus the device's ts
	m      []protocol.Metric
	typ    string // device type; "th" if empty
}

func feed(a *aggregator, rs []reading) {
	for _, r := range rs {
		now := t0.Add(r.at)
		typ := r.typ
		if typ == "" {
			typ = "th"
		}
		a.addReading(now, r.region, typ, r.device, now.Add(-r.lag).UnixMilli(), r.m)
	}
}

func region(s Snapshot, name string) RegionSnapshot {
	for _, r := range s.Regions {
		if r.Region == name {
			return r
		}
	}
	return RegionSnapshot{}
}

// every returns n readings of device spread evenly over [from, to).
func every(n int, from, to time.Duration, region, device string, lag time.Duration) []reading {
	out := make([]reading, n)
	for i := range out {
		out[i] = reading{at: from + (to-from)*time.Duration(i)/time.Duration(n), region: region, device: device, lag: lag}
	}
	return out
}

func TestAggregatorRatesAndDevices(t *testing.T) {
	regions := []string{"us-east", "eu-west"}
	cases := []struct {
		name     string
		readings []reading
		at       time.Duration
		want     map[string]RegionSnapshot // Region, Rate, Total, ActiveDevices compared
		other    uint64
	}{
		{
			name: "nothing yet",
			at:   10 * time.Second,
			want: map[string]RegionSnapshot{"us-east": {}, "eu-west": {}},
		},
		{
			name:     "steady 10/s over the 5s window",
			readings: every(100, 0, 10*time.Second, "us-east", "d1", 0),
			at:       10 * time.Second,
			want:     map[string]RegionSnapshot{"us-east": {Rate: 10, Total: 100, ActiveDevices: 1}, "eu-west": {}},
		},
		{
			name:     "the second in progress is not counted",
			readings: append(every(50, 0, 5*time.Second, "us-east", "d1", 0), every(1000, 5*time.Second, 5*time.Second+900*time.Millisecond, "us-east", "d2", 0)...),
			at:       5*time.Second + 950*time.Millisecond,
			want:     map[string]RegionSnapshot{"us-east": {Rate: 10, Total: 1050, ActiveDevices: 2}, "eu-west": {}},
		},
		{
			name:     "younger than the window divides by its age",
			readings: every(20, 0, 2*time.Second, "eu-west", "d1", 0),
			at:       2 * time.Second,
			want:     map[string]RegionSnapshot{"us-east": {}, "eu-west": {Rate: 10, Total: 20, ActiveDevices: 1}},
		},
		{
			name:     "old readings leave the rate but not the total",
			readings: every(100, 0, 10*time.Second, "us-east", "d1", 0),
			at:       20 * time.Second,
			want:     map[string]RegionSnapshot{"us-east": {Rate: 0, Total: 100, ActiveDevices: 1}, "eu-west": {}},
		},
		{
			name: "devices inactive after 30s",
			readings: []reading{
				{at: 0, region: "us-east", device: "old"},
				{at: 25 * time.Second, region: "us-east", device: "recent"},
				{at: 26 * time.Second, region: "us-east", device: "recent"},
				{at: 27 * time.Second, region: "eu-west", device: "recent"},
			},
			at:   31 * time.Second,
			want: map[string]RegionSnapshot{"us-east": {Rate: 0.2, Total: 3, ActiveDevices: 1}, "eu-west": {Rate: 0.2, Total: 1, ActiveDevices: 1}},
		},
		{
			name: "unknown region is counted apart",
			readings: []reading{
				{at: 0, region: "ap-south", device: "d1"},
				{at: 0, region: "us-east", device: "d1"},
			},
			at:    time.Second,
			want:  map[string]RegionSnapshot{"us-east": {Rate: 1, Total: 1, ActiveDevices: 1}, "eu-west": {}},
			other: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAggregator(regions, 5*time.Second, 30*time.Second, t0)
			feed(a, tc.readings)
			var s Snapshot
			a.snapshot(t0.Add(tc.at), &s)
			if len(s.Regions) != len(regions) {
				t.Fatalf("got %d regions, want %d", len(s.Regions), len(regions))
			}
			for i, name := range regions {
				if s.Regions[i].Region != name {
					t.Errorf("region %d is %q, want %q (config order)", i, s.Regions[i].Region, name)
				}
				got, want := region(s, name), tc.want[name]
				if got.Rate != want.Rate || got.Total != want.Total || got.ActiveDevices != want.ActiveDevices {
					t.Errorf("%s: rate %v total %d active %d; want rate %v total %d active %d",
						name, got.Rate, got.Total, got.ActiveDevices, want.Rate, want.Total, want.ActiveDevices)
				}
			}
			if s.OtherReadings != tc.other {
				t.Errorf("other readings %d, want %d", s.OtherReadings, tc.other)
			}
		})
	}
}

func TestAggregatorLatency(t *testing.T) {
	if latencySamples != 2048 {
		t.Fatalf("the ring case below assumes latencySamples = 2048, not %d", latencySamples)
	}
	lags := func(ms ...int) []reading {
		out := make([]reading, len(ms))
		for i, m := range ms {
			out[i] = reading{at: 9 * time.Second, region: "us-east", device: "d", lag: time.Duration(m) * time.Millisecond}
		}
		return out
	}
	seq := func(from, to int) []int {
		var v []int
		for i := from; i <= to; i++ {
			v = append(v, i)
		}
		return v
	}
	cases := []struct {
		name     string
		readings []reading
		want     Latency
	}{
		{"no samples", nil, Latency{}},
		{"one sample", lags(42), Latency{P50: 42, P99: 42, Samples: 1}},
		{"1..100 ms", lags(seq(1, 100)...), Latency{P50: 50, P99: 99, Samples: 100}},
		{"device clock ahead counts as zero", lags(-500, 10), Latency{P50: 0, P99: 10, Samples: 2}},
		{
			name:     "samples older than the window are left out",
			readings: append([]reading{{at: time.Second, region: "us-east", device: "d", lag: 5 * time.Second}}, lags(7)...),
			want:     Latency{P50: 7, P99: 7, Samples: 1},
		},
		{
			// 1..2048 then 30 samples of 5000..5029 overwrite 1..30; of the
			// 2048 left (31..2048, 5000..5029) rank 1024 is 1054 and rank
			// 2028 is 5009.
			name:     "the ring keeps the latest samples",
			readings: append(lags(seq(1, 2048)...), lags(seq(5000, 5029)...)...),
			want:     Latency{P50: 1054, P99: 5009, Samples: 2048},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAggregator([]string{"us-east"}, 5*time.Second, 30*time.Second, t0)
			feed(a, tc.readings)
			var s Snapshot
			a.snapshot(t0.Add(10*time.Second), &s)
			if got := s.Regions[0].Latency; got != tc.want {
				t.Errorf("latency %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAggregatorMetrics(t *testing.T) {
	m := func(pairs ...any) []protocol.Metric {
		var out []protocol.Metric
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, protocol.Metric{Name: pairs[i].(string), Value: pairs[i+1].(float64)})
		}
		return out
	}
	cases := []struct {
		name     string
		readings []reading
		want     []MetricStats
	}{
		{"none", nil, []MetricStats{}},
		{
			name: "avg min max p95 per name, sorted",
			readings: []reading{
				{at: 6 * time.Second, region: "us-east", device: "a", m: m("temperature_c", 20.0, "humidity_pct", 40.0)},
				{at: 7 * time.Second, region: "us-east", device: "b", m: m("temperature_c", 22.0)},
				{at: 9 * time.Second, region: "us-east", device: "c", m: m("temperature_c", 27.0)},
			},
			want: []MetricStats{
				{DeviceType: "th", Name: "humidity_pct", Count: 1, Avg: 40, Min: 40, Max: 40, P95: 40},
				{DeviceType: "th", Name: "temperature_c", Count: 3, Avg: 23, Min: 20, Max: 27, P95: 27},
			},
		},
		{
			name: "by device type",
			readings: []reading{
				{at: 8 * time.Second, region: "us-east", device: "a", typ: "vibration", m: m("battery_pct", 10.0)},
				{at: 8 * time.Second, region: "us-east", device: "b", typ: "thermostat", m: m("battery_pct", 90.0)},
				{at: 9 * time.Second, region: "us-east", device: "c", typ: "thermostat", m: m("battery_pct", 70.0)},
			},
			want: []MetricStats{
				{DeviceType: "thermostat", Name: "battery_pct", Count: 2, Avg: 80, Min: 70, Max: 90, P95: 90},
				{DeviceType: "vibration", Name: "battery_pct", Count: 1, Avg: 10, Min: 10, Max: 10, P95: 10},
			},
		},
		{
			// 1..100 once each: nearest-rank p95 is 95.
			name:     "p95 by nearest rank",
			readings: hundred(),
			want:     []MetricStats{{DeviceType: "th", Name: "x", Count: 100, Avg: 50.5, Min: 1, Max: 100, P95: 95}},
		},
		{
			name: "the window includes the current second and drops older ones",
			readings: []reading{
				{at: 4 * time.Second, region: "us-east", device: "a", m: m("x", 1000.0)},
				{at: 6 * time.Second, region: "us-east", device: "a", m: m("x", 1.0)},
				{at: 9*time.Second + 500*time.Millisecond, region: "us-east", device: "a", m: m("x", 3.0)},
			},
			want: []MetricStats{{DeviceType: "th", Name: "x", Count: 2, Avg: 2, Min: 1, Max: 3, P95: 3}},
		},
		{
			name: "negative values",
			readings: []reading{
				{at: 8 * time.Second, region: "us-east", device: "a", m: m("t", -5.0)},
				{at: 8 * time.Second, region: "us-east", device: "b", m: m("t", -1.0)},
			},
			want: []MetricStats{{DeviceType: "th", Name: "t", Count: 2, Avg: -3, Min: -5, Max: -1, P95: -1}},
		},
		{
			name:     "a metric with no value in the window is left out",
			readings: []reading{{at: 0, region: "us-east", device: "a", m: m("gone", 1.0)}},
			want:     []MetricStats{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAggregator([]string{"us-east"}, 5*time.Second, 30*time.Second, t0)
			feed(a, tc.readings)
			var s Snapshot
			a.snapshot(t0.Add(9*time.Second+600*time.Millisecond), &s)
			got := s.Regions[0].Metrics
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("metrics\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// hundred is the values 1 to 100 of metric x, in a shuffled order, within
// the window.
func hundred() []reading {
	out := make([]reading, 100)
	for i := range out {
		v := float64((i*37)%100 + 1)
		out[i] = reading{at: 8 * time.Second, region: "us-east", device: "a", m: []protocol.Metric{{Name: "x", Value: v}}}
	}
	return out
}

func TestAggregatorMetricSeriesBounded(t *testing.T) {
	a := newAggregator([]string{"us-east"}, 5*time.Second, 30*time.Second, t0)
	for i := range maxMetricSeries + 10 {
		a.addReading(t0, "us-east", "th", "d", t0.UnixMilli(), []protocol.Metric{{Name: fmt.Sprintf("m%03d", i), Value: 1}})
	}
	var s Snapshot
	a.snapshot(t0, &s)
	if n := len(s.Regions[0].Metrics); n != maxMetricSeries {
		t.Errorf("%d metric series, want the bound %d", n, maxMetricSeries)
	}
	if a.skipped != 10 {
		t.Errorf("skipped %d, want 10", a.skipped)
	}
}

func TestAggregatorDeadLetters(t *testing.T) {
	cases := []struct {
		name    string
		letters [][2]string // region, reason
		want    map[string]uint64
		total   uint64
	}{
		{"none", nil, map[string]uint64{}, 0},
		{
			name:    "by reason",
			letters: [][2]string{{"us-east", "bad_json"}, {"us-east", "bad_json"}, {"us-east", "stale"}, {"eu-west", "stale"}},
			want:    map[string]uint64{"bad_json": 2, "stale": 1},
			total:   3,
		},
		{
			name:    "unknown region ignored",
			letters: [][2]string{{"mars", "bad_json"}},
			want:    map[string]uint64{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAggregator([]string{"us-east", "eu-west"}, 5*time.Second, 30*time.Second, t0)
			for _, l := range tc.letters {
				a.addDeadLetter(l[0], l[1])
			}
			var s Snapshot
			a.snapshot(t0, &s)
			got := s.Regions[0]
			if fmt.Sprint(got.Rejected) != fmt.Sprint(tc.want) || got.RejectedTotal != tc.total {
				t.Errorf("rejected %v total %d, want %v total %d", got.Rejected, got.RejectedTotal, tc.want, tc.total)
			}
		})
	}

	t.Run("reasons bounded", func(t *testing.T) {
		a := newAggregator([]string{"us-east"}, 5*time.Second, 30*time.Second, t0)
		for i := range maxReasons + 5 {
			a.addDeadLetter("us-east", fmt.Sprintf("r%d", i))
		}
		var s Snapshot
		a.snapshot(t0, &s)
		r := s.Regions[0]
		if len(r.Rejected) != maxReasons+1 || r.Rejected[otherReason] != 5 || r.RejectedTotal != maxReasons+5 {
			t.Errorf("%d reasons, %d under %q, total %d; want %d, 5, %d",
				len(r.Rejected), r.Rejected[otherReason], otherReason, r.RejectedTotal, maxReasons+1, maxReasons+5)
		}
	})
}

func TestReasonOf(t *testing.T) {
	long := string(make([]byte, 100))
	cases := []struct {
		name    string
		header  string
		subject string
		want    string
	}{
		{"header wins", "bad_json", "deadletter.us-east.stale", "bad_json"},
		{"subject's last token", "", "deadletter.us-east.stale", "stale"},
		{"empty", "", "deadletter.us-east.", "unknown"},
		{"truncated", long, "deadletter.us-east.x", long[:maxReasonLen]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := nats.Header{}
			if tc.header != "" {
				h.Set(protocol.HeaderReason, tc.header)
			}
			if got := reasonOf(h, tc.subject); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPercentiles(t *testing.T) {
	cases := []struct {
		in   []float64
		want Latency
	}{
		{nil, Latency{}},
		{[]float64{3, 1, 2}, Latency{P50: 2, P99: 3, Samples: 3}},
		{[]float64{5, 5, 5, 5}, Latency{P50: 5, P99: 5, Samples: 4}},
	}
	for _, tc := range cases {
		if got := percentiles(tc.in); got != tc.want {
			t.Errorf("percentiles(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestAggregatorReachability(t *testing.T) {
	type step struct {
		at    time.Duration
		state string
	}
	cases := []struct {
		name      string
		steps     []step
		reachable bool
		since     time.Duration // -1: zero
	}{
		{"not asked yet", nil, false, -1},
		{"reachable", []step{{1 * time.Second, "ok"}}, true, -1},
		{"unreachable from the start", []step{{2 * time.Second, "unreachable: no answer"}}, false, 2 * time.Second},
		{
			name:  "since the first failure, not the latest",
			steps: []step{{1 * time.Second, "ok"}, {3 * time.Second, "unreachable: no answer"}, {5 * time.Second, "unreachable: no route to region"}},
			since: 3 * time.Second,
		},
		{
			name:      "back",
			steps:     []step{{1 * time.Second, "unreachable: no answer"}, {4 * time.Second, "ok"}},
			reachable: true, since: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAggregator([]string{"eu-west"}, 5*time.Second, 30*time.Second, t0)
			for _, s := range tc.steps {
				a.setDeadLetterState(t0.Add(s.at), "eu-west", s.state)
			}
			var s Snapshot
			a.snapshot(t0.Add(10*time.Second), &s)
			r := s.Regions[0]
			want := time.Time{}
			if tc.since >= 0 {
				want = t0.Add(tc.since).UTC()
			}
			if r.Reachable != tc.reachable || !r.UnreachableSince.Equal(want) {
				t.Errorf("reachable %v since %v, want %v since %v", r.Reachable, r.UnreachableSince, tc.reachable, want)
			}
		})
	}
}
