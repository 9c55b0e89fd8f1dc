package protocol

import (
	"encoding/json"
	"math"
	"math/rand/v2"
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
			_, r, err := Decode(testTopic, g.payload, testNow, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, testTopic, r, testNow)
		})
	}
}

// TestRoundTripRandom encodes random valid readings, including awkward
// floats, and decodes them back.
func TestRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	name := func(first, rest string) string {
		b := []byte{first[rng.IntN(len(first))]}
		for range rng.IntN(63) {
			b = append(b, rest[rng.IntN(len(rest))])
		}
		return string(b)
	}
	for i := range 2000 {
		r := Reading{Version: 1, Device: name(alnum, alnum+"-"), Boot: rng.Uint64(), Seq: rng.Uint64() | 1,
			TS: testNow.UnixMilli() - rng.Int64N(86_400_000)}
		seen := map[string]bool{}
		for range 1 + rng.IntN(MaxMetrics) {
			n := name("abcdefghijklmnopqrstuvwxyz", alnum+"_")
			if seen[n] {
				continue
			}
			seen[n] = true
			var v float64
			switch i % 3 {
			case 0:
				v = rng.NormFloat64() * 100
			case 1:
				v = float64(rng.Int64N(1e6)) / 10
			default:
				for v = math.NaN(); math.IsNaN(v) || math.IsInf(v, 0); {
					v = math.Float64frombits(rng.Uint64())
				}
			}
			r.Metrics = append(r.Metrics, Metric{n, v})
		}
		checkRoundTrip(t, "telemetry/r/t/"+r.Device, r, testNow)
		if t.Failed() {
			return
		}
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
	if !sameReading(got, r) {
		t.Fatalf("round trip changed the reading:\n got %+v\nwant %+v\nwire %s", got, r, b)
	}
	if again := AppendEncode(nil, got); string(again) != string(b) {
		t.Fatalf("re-encoding differs:\n%s\n%s", again, b)
	}
	if strings.Contains(string(b), " ") {
		t.Fatalf("encoding is not compact: %s", b)
	}
}
