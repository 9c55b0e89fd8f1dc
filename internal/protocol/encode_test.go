package protocol

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppendEncode(t *testing.T) {
	tests := []struct {
		name string
		r    Reading
		want string
	}{
		{"example", Reading{Version: 1, Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123,
			Metrics: []Metric{{"temperature_c", 21.5}, {"humidity_pct", 40.2}, {"battery_pct", 97.1}}},
			`{"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100000123,"metrics":{"temperature_c":21.5,"humidity_pct":40.2,"battery_pct":97.1}}`},
		{"metric order kept", Reading{Device: "d", Boot: 0, Seq: 1, TS: -5,
			Metrics: []Metric{{"z", 1}, {"a", -0.5}}},
			`{"v":1,"device":"d","boot":0,"seq":1,"ts":-5,"metrics":{"z":1,"a":-0.5}}`},
		{"shortest floats", Reading{Device: "d", Seq: 1, Metrics: []Metric{{"a", 0.1}, {"b", 1e21}, {"c", 1e-7},
			{"d", math.MaxFloat64}, {"e", math.SmallestNonzeroFloat64}, {"f", math.Copysign(0, -1)}, {"g", 100000}, {"h", 1e6}}},
			`{"v":1,"device":"d","boot":0,"seq":1,"ts":0,"metrics":{"a":0.1,"b":1e+21,"c":1e-07,"d":1.7976931348623157e+308,"e":5e-324,"f":-0,"g":100000,"h":1e+06}}`},
		{"non-finite as null", Reading{Device: "d", Seq: 1, Metrics: []Metric{{"a", math.NaN()}, {"b", math.Inf(-1)}}},
			`{"v":1,"device":"d","boot":0,"seq":1,"ts":0,"metrics":{"a":null,"b":null}}`},
		{"version ignored", Reading{Version: 7, Device: "d", Seq: 1},
			`{"v":1,"device":"d","boot":0,"seq":1,"ts":0,"metrics":{}}`},
		{"escaping", Reading{Device: "a\"b\\c\x00\n\u00e9\xff", Seq: 1, Metrics: []Metric{{"\x1f", 1}}},
			`{"v":1,"device":"a\"b\\c\u0000\u000a` + "\u00e9\ufffd" + `","boot":0,"seq":1,"ts":0,"metrics":{"\u001f":1}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendEncode([]byte("prefix"), tt.r)
			if string(got) != "prefix"+tt.want {
				t.Errorf("got  %s\nwant prefix%s", got, tt.want)
			}
			if !json.Valid(got[len("prefix"):]) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestAppendEncodeAllocs(t *testing.T) {
	r := benchReading(3)
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEncode(buf[:0], r) }); n != 0 {
		t.Errorf("AppendEncode allocates %v times per call with room in dst, want 0", n)
	}
}

// TestRoundTripGolden re-encodes every valid golden payload.
func TestRoundTripGolden(t *testing.T) {
	for _, g := range loadGolden(t) {
		if g.reason != "" {
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			_, b, err := Decode(testTopic, g.payload, testNow, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Readings) != 1 {
				t.Fatalf("v1 payload decoded to %d readings", len(b.Readings))
			}
			checkRoundTrip(t, testTopic, b.Readings[0], testNow)
		})
	}
}

// TestRoundTripRandom encodes random valid readings, including awkward
// floats, and decodes them back.
func TestRoundTripRandom(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	for i := range 2000 {
		r := Reading{Version: 1, Device: g.device(), Boot: g.rng.Uint64(), Seq: g.rng.Uint64() | 1,
			TS: testNow.UnixMilli() - g.rng.Int64N(86_400_000)}
		for _, n := range g.metricNames() {
			r.Metrics = append(r.Metrics, Metric{n, g.value(i)})
		}
		checkRoundTrip(t, "telemetry/r/t/"+r.Device, r, testNow)
		if t.Failed() {
			return
		}
	}
}

// gen makes random valid devices, names and values.
type gen struct{ rng *rand.Rand }

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

func (g gen) name(first, rest string) string {
	b := []byte{first[g.rng.IntN(len(first))]}
	for range g.rng.IntN(63) {
		b = append(b, rest[g.rng.IntN(len(rest))])
	}
	return string(b)
}

func (g gen) device() string { return g.name(alnum, alnum+"-") }

// metricNames returns 1 to MaxMetrics distinct names.
func (g gen) metricNames() []string {
	var names []string
	seen := map[string]bool{}
	for range 1 + g.rng.IntN(MaxMetrics) {
		n := g.name("abcdefghijklmnopqrstuvwxyz", alnum+"_")
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names
}

// awkwardFloats are finite values whose shortest form is long, signed,
// subnormal or at the edge of float64's range.
var awkwardFloats = []float64{math.Copysign(0, -1), 0, 1e-300, -1e-300, math.MaxFloat64, -math.MaxFloat64,
	math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64, 2.2250738585072014e-308, 1e21, 1e-7, 0.1,
	1.0000000000000002, 123456789012345680, 9007199254740993, math.Pi, -273.15}

// value returns a finite value of the kind k selects: normal, tenths,
// any finite bit pattern or an awkward one.
func (g gen) value(k int) float64 {
	switch k % 4 {
	case 0:
		return g.rng.NormFloat64() * 100
	case 1:
		return float64(g.rng.Int64N(1e6)) / 10
	case 2:
		for {
			if v := math.Float64frombits(g.rng.Uint64()); !math.IsNaN(v) && !math.IsInf(v, 0) {
				return v
			}
		}
	}
	return awkwardFloats[g.rng.IntN(len(awkwardFloats))]
}

func TestAppendEncodeBatch(t *testing.T) {
	th := func(seq uint64, ts int64, t, h float64) Reading {
		return Reading{Version: 2, Device: "th-00042", Boot: 1764100000, Seq: seq, TS: ts,
			Metrics: []Metric{{"temperature_c", t}, {"humidity_pct", h}}}
	}
	tests := []struct {
		name     string
		readings []Reading
		want     string
	}{
		{"example", []Reading{th(17, 1764100000123, 21.5, 40.2), th(18, 1764100001123, 21.6, 40.1)},
			`{"v":2,"device":"th-00042","boot":1764100000,"seq":17,"metrics":["temperature_c","humidity_pct"],"readings":[[1764100000123,21.5,40.2],[1764100001123,21.6,40.1]]}`},
		{"one reading", []Reading{th(1, -5, 0, -1)},
			`{"v":2,"device":"th-00042","boot":1764100000,"seq":1,"metrics":["temperature_c","humidity_pct"],"readings":[[-5,0,-1]]}`},
		{"first reading names device, boot, seq and metrics",
			[]Reading{th(9, 1, 1, 2), {Device: "other", Boot: 7, Seq: 3, TS: 2, Metrics: []Metric{{"x", 3}, {"y", 4}}}},
			`{"v":2,"device":"th-00042","boot":1764100000,"seq":9,"metrics":["temperature_c","humidity_pct"],"readings":[[1,1,2],[2,3,4]]}`},
		{"shortest floats", []Reading{{Device: "d", Seq: 1, Metrics: []Metric{{"a", 0.1}, {"b", 1e21}, {"c", 1e-7},
			{"d", math.MaxFloat64}, {"e", math.SmallestNonzeroFloat64}, {"f", math.Copysign(0, -1)}, {"g", 1e-300}}}},
			`{"v":2,"device":"d","boot":0,"seq":1,"metrics":["a","b","c","d","e","f","g"],"readings":[[0,0.1,1e+21,1e-07,1.7976931348623157e+308,5e-324,-0,1e-300]]}`},
		{"non-finite as null", []Reading{{Device: "d", Seq: 1, Metrics: []Metric{{"a", math.NaN()}, {"b", math.Inf(1)}}}},
			`{"v":2,"device":"d","boot":0,"seq":1,"metrics":["a","b"],"readings":[[0,null,null]]}`},
		{"no metrics", []Reading{{Device: "d", Seq: 1, TS: 1}, {TS: 2}},
			`{"v":2,"device":"d","boot":0,"seq":1,"metrics":[],"readings":[[1],[2]]}`},
		{"escaping", []Reading{{Device: "a\"b\\c\x00\n\u00e9\xff", Seq: 1, Metrics: []Metric{{"\x1f", 1}}}},
			`{"v":2,"device":"a\"b\\c\u0000\u000a` + "\u00e9\ufffd" + `","boot":0,"seq":1,"metrics":["\u001f"],"readings":[[0,1]]}`},
		{"no readings", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendEncodeBatch([]byte("prefix"), tt.readings)
			if string(got) != "prefix"+tt.want {
				t.Errorf("got  %s\nwant prefix%s", got, tt.want)
			}
			if tt.want != "" && !json.Valid(got[len("prefix"):]) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestAppendEncodeBatchAllocs(t *testing.T) {
	readings := benchBatch(100, 3)
	buf := make([]byte, 0, MaxBatchBytes)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEncodeBatch(buf[:0], readings) }); n != 0 {
		t.Errorf("AppendEncodeBatch allocates %v times per call with room in dst, want 0", n)
	}
}

// TestRoundTripBatch: awkward values survive AppendEncodeBatch and Decode
// bit for bit, at both ends of the batch's bounds.
func TestRoundTripBatch(t *testing.T) {
	now := testNow.UnixMilli()
	batch := func(first uint64, n int, values ...float64) []Reading {
		readings := make([]Reading, n)
		for i := range readings {
			r := Reading{Version: 2, Device: "th-00042", Boot: math.MaxUint64, Seq: first + uint64(i), TS: now - int64(i)}
			for j, v := range values {
				r.Metrics = append(r.Metrics, Metric{"m" + strconv.Itoa(j), v})
			}
			readings[i] = r
		}
		return readings
	}
	tests := []struct {
		name     string
		readings []Reading
	}{
		{"awkward values", batch(1, 3, awkwardFloats...)},
		{"one reading at the last seq", batch(math.MaxUint64, 1, -0.5)},
		{"last reading at the last seq", batch(math.MaxUint64-MaxBatchReadings+1, MaxBatchReadings, 1)},
		{"most readings of most metrics", batch(17, MaxBatchReadings, make([]float64, MaxMetrics)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRoundTripBatch(t, testTopic, tt.readings, testNow)
		})
	}
}

// TestRoundTripRandomBatch encodes random valid batches, of up to
// MaxBatchReadings readings and MaxMetrics metrics within MaxBatchBytes,
// and decodes them back.
func TestRoundTripRandomBatch(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	for i := range 150 {
		n := 1 + g.rng.IntN(MaxBatchReadings)
		dev, boot, names := g.device(), g.rng.Uint64(), g.metricNames()
		first := 1 + g.rng.Uint64N(math.MaxUint64-uint64(n)+1)
		if i%10 == 0 {
			first = math.MaxUint64 - uint64(n) + 1
		}
		readings := make([]Reading, n)
		for k := range readings {
			r := Reading{Version: 2, Device: dev, Boot: boot, Seq: first + uint64(k), TS: testNow.UnixMilli() - g.rng.Int64N(86_400_000)}
			for _, name := range names {
				r.Metrics = append(r.Metrics, Metric{name, g.value(i + k)})
			}
			readings[k] = r
		}
		for len(AppendEncodeBatch(nil, readings)) > MaxBatchBytes {
			readings = readings[:len(readings)/2]
		}
		checkRoundTripBatch(t, "telemetry/r/t/"+dev, readings, testNow)
		if t.Failed() {
			return
		}
	}
}

// checkRoundTripBatch encodes readings, a valid batch, and decodes them
// back with Decode and Unmarshal.
func checkRoundTripBatch(t *testing.T, topic string, readings []Reading, now time.Time) {
	t.Helper()
	b := AppendEncodeBatch(nil, readings)
	if len(b) > MaxBatchBytes {
		t.Fatalf("encoded batch has %d bytes", len(b))
	}
	_, got, err := Decode(topic, b, now, Limits{})
	if err != nil {
		t.Fatalf("decoding %.200s: %v", b, err)
	}
	want := Batch{Version: Version2, Device: readings[0].Device, Boot: readings[0].Boot, Readings: readings}
	if !sameBatch(got, want) {
		t.Fatalf("round trip changed the batch:\n got %+v\nwant %+v\nwire %s", got, want, b)
	}
	if u, err := Unmarshal(b); err != nil || !sameBatch(u, want) {
		t.Fatalf("Unmarshal = %+v, %v; want %+v", u, err, want)
	}
	if again := AppendEncodeBatch(nil, got.Readings); string(again) != string(b) {
		t.Fatalf("re-encoding differs:\n%s\n%s", again, b)
	}
	if strings.Contains(string(b), " ") {
		t.Fatalf("encoding is not compact: %s", b)
	}
}

func checkRoundTrip(t *testing.T, topic string, r Reading, now time.Time) {
	t.Helper()
	b := AppendEncode(nil, r)
	if len(b) > MaxPayloadBytes {
		t.Fatalf("encoded reading has %d bytes: %s", len(b), b)
	}
	_, got, err := Decode(topic, b, now, Limits{})
	if err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if want := (Batch{Version: Version1, Device: r.Device, Boot: r.Boot, Readings: []Reading{r}}); !sameBatch(got, want) {
		t.Fatalf("round trip changed the reading:\n got %+v\nwant %+v\nwire %s", got, want, b)
	}
	if again := AppendEncode(nil, got.Readings[0]); string(again) != string(b) {
		t.Fatalf("re-encoding differs:\n%s\n%s", again, b)
	}
	if strings.Contains(string(b), " ") {
		t.Fatalf("encoding is not compact: %s", b)
	}
}
