package devices

import (
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// t0 is a fixed measuring start, 00:00 UTC, so that tests see whole days.
var t0 = time.Date(2025, 11, 25, 0, 0, 0, 0, time.UTC)

// readAll takes n readings of s, every step from t0.
func readAll(s sensor, n int, step time.Duration) [][]protocol.Metric {
	out := make([][]protocol.Metric, n)
	for i := range out {
		out[i] = s.read(nil, t0.Add(time.Duration(i)*step))
	}
	return out
}

func TestSensorsDeterministic(t *testing.T) {
	for _, typ := range Types() {
		t.Run(typ, func(t *testing.T) {
			a := readAll(newSensor(typ, "eu-west", 42, 7), 2000, 300*time.Millisecond)
			b := readAll(newSensor(typ, "eu-west", 42, 7), 2000, 300*time.Millisecond)
			for i := range a {
				if !slices.Equal(a[i], b[i]) {
					t.Fatalf("reading %d differs under the same seed:\n%v\n%v", i, a[i], b[i])
				}
			}
			for _, other := range []struct {
				name  string
				seed  int64
				index int
			}{{"seed", 43, 7}, {"device", 42, 8}} {
				c := readAll(newSensor(typ, "eu-west", other.seed, other.index), 2000, 300*time.Millisecond)
				if slices.EqualFunc(a, c, slices.Equal) {
					t.Errorf("another %s gives the same readings", other.name)
				}
			}
		})
	}
}

func TestSensorRanges(t *testing.T) {
	type bounds struct{ lo, hi float64 }
	tests := []struct {
		typ    string
		ranges map[string]bounds
	}{
		{TypeThermostat, map[string]bounds{
			MetricTemperature: {10, 30}, MetricHumidity: {5, 95}, MetricBattery: {5, 100}}},
		{TypeVibration, map[string]bounds{
			MetricRMS: {0, 60}, MetricTemperature: {25, 70}}},
		{TypeTracker, map[string]bounds{
			MetricLat: {-85, 85}, MetricLon: {-180, 180}, MetricSpeed: {0, 110}, MetricBattery: {5, 100}}},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			// Known regions and a made-up one, several devices each, two
			// days of readings 30 s apart.
			for _, region := range []string{"us-east", "eu-west", "ap-south", "mars-1"} {
				for dev := range 5 {
					for i, ms := range readAll(newSensor(tt.typ, region, 1, dev), 5760, 30*time.Second) {
						if len(ms) != len(tt.ranges) {
							t.Fatalf("%s device %d reading %d: %d metrics, want %d: %v", region, dev, i, len(ms), len(tt.ranges), ms)
						}
						for _, m := range ms {
							b, ok := tt.ranges[m.Name]
							switch {
							case !ok || !protocol.ValidMetricName(m.Name):
								t.Fatalf("unexpected metric %q", m.Name)
							case math.IsNaN(m.Value) || m.Value < b.lo || m.Value > b.hi:
								t.Fatalf("%s device %d reading %d: %s = %v, want %v..%v", region, dev, i, m.Name, m.Value, b.lo, b.hi)
							}
						}
					}
				}
			}
		})
	}
}

// value returns the named metric of ms.
func value(t *testing.T, ms []protocol.Metric, name string) float64 {
	t.Helper()
	for _, m := range ms {
		if m.Name == name {
			return m.Value
		}
	}
	t.Fatalf("no %s in %v", name, ms)
	return 0
}

func TestThermostatFollowsTheLocalDay(t *testing.T) {
	// eu-west is UTC: warmest mid afternoon, coolest before dawn.
	var afternoon, night float64
	for dev := range 20 {
		s := newSensor(TypeThermostat, "eu-west", 1, dev)
		night += value(t, s.read(nil, t0.Add(3*time.Hour)), MetricTemperature)
		afternoon += value(t, s.read(nil, t0.Add(15*time.Hour)), MetricTemperature)
	}
	if afternoon <= night+20 { // at least 1 °C warmer on average
		t.Errorf("mean at 15:00 %.2f °C, at 03:00 %.2f °C: want the afternoon warmer", afternoon/20, night/20)
	}
}

func TestBatteryDrains(t *testing.T) {
	for _, typ := range []string{TypeThermostat, TypeTracker} {
		t.Run(typ, func(t *testing.T) {
			rs := readAll(newSensor(typ, "us-east", 3, 0), 1000, time.Second)
			first, last := value(t, rs[0], MetricBattery), value(t, rs[len(rs)-1], MetricBattery)
			if !(last < first) {
				t.Errorf("battery went from %v to %v over 1000 readings: want it lower", first, last)
			}
		})
	}
}

func TestVibrationSpikes(t *testing.T) {
	rs := readAll(newSensor(TypeVibration, "us-east", 5, 0), 20000, time.Second)
	rms := make([]float64, len(rs))
	for i, r := range rs {
		rms[i] = value(t, r, MetricRMS)
	}
	sort.Float64s(rms)
	median := rms[len(rms)/2]
	spikes := 0
	for _, v := range rms {
		if v > 3*median {
			spikes++
		}
	}
	// About 100 spikes of 3 to 10 readings are expected; noise alone never
	// triples the baseline.
	if spikes < 50 || spikes > 2000 {
		t.Errorf("%d of %d readings above 3× the median %.2f: want occasional spikes", spikes, len(rms), median)
	}
}

func TestTrackerMoves(t *testing.T) {
	s := newSensor(TypeTracker, "ap-south", 9, 0)
	first := s.read(nil, t0)
	lat0, lon0 := value(t, first, MetricLat), value(t, first, MetricLon)
	var last []protocol.Metric
	for i := 1; i <= 360; i++ { // an hour, every 10 s
		last = s.read(nil, t0.Add(time.Duration(i)*10*time.Second))
	}
	dlat, dlon := value(t, last, MetricLat)-lat0, value(t, last, MetricLon)-lon0
	km := math.Hypot(dlat*111.2, dlon*111.2*math.Cos(lat0*math.Pi/180))
	// At most 110 km/h for an hour; standing still all hour is not moving.
	if km < 0.1 || km > 110 {
		t.Errorf("tracker moved %.2f km in an hour, want between 0.1 and 110", km)
	}
	// Near Mumbai.
	if math.Abs(lat0-19.08) > 1 || math.Abs(lon0-72.88) > 1 {
		t.Errorf("tracker starts at %v,%v: want near Mumbai", lat0, lon0)
	}
}

func TestDeviceReadingsDecode(t *testing.T) {
	now := time.Now()
	for i, typ := range Types() {
		t.Run(typ, func(t *testing.T) {
			d := newDevice(41+i, "eu-west", typ, 1764100000, 1)
			var buf []byte
			for seq := uint64(1); seq <= 3; seq++ {
				d.read(now)
				d.add(now, protocol.Version1)
				buf = d.encodeBatch(buf[:0], false)
				d.cur.last.Add(1)
				d.resetBatch()
				topic, b, err := protocol.Decode(d.topic, buf, now, protocol.Limits{})
				if err != nil {
					t.Fatalf("decoding %s %s: %v", d.topic, buf, err)
				}
				if topic.Device != d.id || topic.DeviceType != typ || topic.Region != "eu-west" {
					t.Errorf("topic %s parsed as %+v", d.topic, topic)
				}
				if b.Version != protocol.Version1 || len(b.Readings) != 1 {
					t.Fatalf("%s: decoded as version %d with %d readings, want v1 with one", buf, b.Version, len(b.Readings))
				}
				if r := b.Readings[0]; r.Device != d.id || r.Boot != 1764100000 || r.Seq != seq || r.TS != now.UnixMilli() || len(r.Metrics) != len(typeMetrics(typ)) {
					t.Errorf("reading %+v: want device %s boot 1764100000 seq %d ts %d, the metrics %v", r, d.id, seq, now.UnixMilli(), typeMetrics(typ))
				}
			}
		})
	}
}

// TestDeviceBatchesDecode: readings measured into a batch encode as one
// v2 message that protocol.Decode takes back reading for reading, seqs
// following the device's last.
func TestDeviceBatchesDecode(t *testing.T) {
	now := time.Now()
	for i, typ := range Types() {
		t.Run(typ, func(t *testing.T) {
			d := newDevice(41+i, "eu-west", typ, 1764100000, 1)
			d.cur.last.Store(16) // readings 1 to 16 went before
			var want []protocol.Reading
			for k := range 5 {
				at := now.Add(time.Duration(k-5) * time.Second)
				d.read(at)
				want = append(want, protocol.Reading{Version: protocol.Version2, Device: d.id, Boot: 1764100000,
					Seq: 17 + uint64(k), TS: at.UnixMilli(), Metrics: slices.Clone(d.metrics)})
				d.add(at, protocol.Version2)
			}
			buf := d.encodeBatch(nil, true)
			_, b, err := protocol.Decode(d.topic, buf, now, protocol.Limits{})
			if err != nil {
				t.Fatalf("decoding %s: %v", buf, err)
			}
			if b.Version != protocol.Version2 || b.Device != d.id || b.Boot != 1764100000 || b.First() != 17 || b.Last() != 21 {
				t.Fatalf("%s decoded as %+v: want v2, seqs 17 to 21", buf, b)
			}
			for k, r := range b.Readings {
				if !slices.Equal(r.Metrics, want[k].Metrics) || r.Seq != want[k].Seq || r.TS != want[k].TS || r.Device != want[k].Device {
					t.Errorf("reading %d: %+v, want %+v", k, r, want[k])
				}
			}
			d.resetBatch()
			if len(d.batch) != 0 || len(d.batchVals) != 0 || len(d.batchTimes) != 0 {
				t.Errorf("after reset the batch in hand holds %d readings, %d values, %d times", len(d.batch), len(d.batchVals), len(d.batchTimes))
			}
		})
	}
}

func TestDeviceIDs(t *testing.T) {
	tests := []struct {
		index   int
		typ, id string
		region  string
		topic   string
	}{
		{41, TypeThermostat, "th-00042", "us-east", "telemetry/us-east/thermostat/th-00042"},
		{0, TypeVibration, "vb-00001", "eu-west", "telemetry/eu-west/vibration/vb-00001"},
		{99999, TypeTracker, "tr-100000", "ap-south", "telemetry/ap-south/tracker/tr-100000"},
	}
	for _, tt := range tests {
		d := newDevice(tt.index, tt.region, tt.typ, 1, 1)
		if d.id != tt.id || d.topic != tt.topic || !protocol.ValidName(d.id) {
			t.Errorf("device %d %s: id %q topic %q, want %q %q", tt.index, tt.typ, d.id, d.topic, tt.id, tt.topic)
		}
	}
}
