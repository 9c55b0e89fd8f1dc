package protocol

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Golden payloads are published on testTopic and decoded at testNow.
var (
	testTopic = "telemetry/us-east/thermo/th-00042"
	testNow   = time.UnixMilli(1764100060000)
)

type golden struct {
	name    string // "valid/<file>" or "<reason>/<file>" without .json
	reason  Reason // empty for valid
	payload []byte
}

func loadGolden(t testing.TB) []golden {
	t.Helper()
	var out []golden
	files, err := filepath.Glob("testdata/valid/*.json")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("testdata/invalid/*/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		g := golden{payload: b}
		dir := filepath.Base(filepath.Dir(f))
		if dir != "valid" {
			g.reason = Reason(dir)
		}
		g.name = dir + "/" + strings.TrimSuffix(filepath.Base(f), ".json")
		out = append(out, g)
	}
	if len(out) == 0 {
		t.Fatal("no golden payloads in testdata")
	}
	return out
}

// wantDetail pins which check rejected a golden payload where the reason
// alone would not show it.
var wantDetail = map[string]string{
	"too_large/size-4097":                       "4097 bytes, max 4096",
	"bad_json/empty":                            "empty payload",
	"bad_json/array":                            "not a JSON object",
	"bad_json/trailing-garbage":                 "after the top-level object",
	"bad_json/two-objects":                      "after the top-level object",
	"bad_json/duplicate-field":                  `duplicate field "seq"`,
	"bad_json/duplicate-field-escaped":          `duplicate field "seq"`,
	"bad_json/duplicate-v":                      `duplicate field "v"`,
	"bad_json/deep-nesting":                     "nesting deeper than 8",
	"bad_json/deep-nesting-1000":                "nesting deeper than 8",
	"bad_json/deep-nesting-in-metrics":          "nesting deeper than 8",
	"bad_json/invalid-utf8":                     "invalid UTF-8",
	"bad_json/raw-newline-in-string":            "control character 0x0a",
	"bad_json/leading-zero":                     "'1'",
	"bad_json/nul-byte":                         "byte 0x00",
	"bad_version/missing":                       "missing field v",
	"bad_version/two":                           "unsupported version 2",
	"bad_version/string":                        "got string",
	"bad_version/float":                         "got \"1.0\"",
	"bad_version/wrong-before-bad-field":        "unsupported version 2",
	"bad_field/device-number":                   "device must be a string, got number",
	"bad_field/device-escaped-control":          `device "th-00042\x00" does not match`,
	"bad_field/device-unicode":                  `"th-0004\u00e9"`,
	"bad_field/device-very-long":                `"...`,
	"bad_field/boot-negative":                   `boot must be an unsigned integer, got "-1"`,
	"bad_field/boot-exponent":                   `got "1e3"`,
	"bad_field/boot-overflow":                   "overflows uint64",
	"bad_field/seq-zero":                        "seq must be at least 1",
	"bad_field/seq-negative-zero":               `seq must be an unsigned integer, got "-0"`,
	"bad_field/ts-fraction":                     "ts must be an integer",
	"bad_field/ts-overflow":                     "overflows int64",
	"bad_field/unknown-field":                   `unknown field "extra"`,
	"bad_field/unknown-field-control-chars":     `unknown field "x\x1b[31m"`,
	"bad_field/unknown-field-nested-duplicates": `unknown field "x"`,
	"bad_field/missing-metrics":                 "missing field metrics",
	"bad_field/bad-field-before-mismatch":       "seq must be at least 1",
	"topic_mismatch/other-device":               `device "th-00043" differs from the topic's device-id "th-00042"`,
	"bad_metric/empty":                          "metrics is empty",
	"bad_metric/metrics-33":                     "33 entries, max 32",
	"bad_metric/name-control":                   `metric name "temp\x07"`,
	"bad_metric/value-nan-string":               `metric "x" must be a number, got string`,
	"bad_metric/value-overflow":                 "out of float64 range",
	"bad_metric/duplicate":                      `duplicate metric "x"`,
	"bad_metric/duplicate-escaped":              `duplicate metric "x"`,
	"stale/just-too-old":                        "more than 24h0m0s before now",
	"future/just-too-new":                       "more than 5m0s after now",
}

// unmarshalReason is what Unmarshal says where a payload has several faults
// and Decode reports one that Unmarshal does not check.
var unmarshalReason = map[string]Reason{
	"topic_mismatch/mismatch-before-bad-metric": ReasonBadMetric,
}

// structural reasons are the ones Unmarshal finds too.
var structural = map[Reason]bool{ReasonTooLarge: true, ReasonBadJSON: true, ReasonBadVersion: true,
	ReasonBadField: true, ReasonBadMetric: true}

func TestDecodeGolden(t *testing.T) {
	seenReason := map[Reason]bool{ReasonBadTopic: len(badTopics) > 0} // bad_topic: see TestParseTopic
	seenDetail := map[string]bool{}
	for _, g := range loadGolden(t) {
		t.Run(g.name, func(t *testing.T) {
			topic, r, err := Decode(testTopic, g.payload, testNow, Limits{})
			if g.reason == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if want := (Topic{"us-east", "thermo", "th-00042"}); topic != want {
					t.Errorf("topic = %+v, want %+v", topic, want)
				}
				if r.Version != Version1 || r.Device != "th-00042" || len(r.Metrics) == 0 {
					t.Errorf("reading = %+v", r)
				}
				u, err := Unmarshal(g.payload)
				if err != nil || !sameReading(u, r) {
					t.Errorf("Unmarshal = %+v, %v; want %+v", u, err, r)
				}
				return
			}
			seenReason[g.reason] = true
			rej := checkRejection(t, err, g.reason)
			if want, ok := wantDetail[g.name]; ok {
				seenDetail[g.name] = true
				if !strings.Contains(rej.Detail, want) {
					t.Errorf("detail %q does not contain %q", rej.Detail, want)
				}
			}
			_, uerr := Unmarshal(g.payload)
			if want, ok := unmarshalReason[g.name]; ok {
				checkRejection(t, uerr, want)
			} else if structural[g.reason] {
				checkRejection(t, uerr, g.reason)
			} else if uerr != nil {
				t.Errorf("Unmarshal: %v, want success (no topic or window check)", uerr)
			}
		})
	}
	for _, reason := range Reasons {
		if !seenReason[reason] {
			t.Errorf("no golden payload for reason %s", reason)
		}
	}
	for name := range wantDetail {
		if !seenDetail[name] {
			t.Errorf("wantDetail names %s, which is not a golden payload", name)
		}
	}
}

// checkRejection asserts err is a *Rejection with reason and a detail that is
// short and free of control characters.
func checkRejection(t *testing.T, err error, reason Reason) *Rejection {
	t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("error = %v (%T), want a *Rejection %s", err, err, reason)
	}
	if rej.Reason != reason {
		t.Fatalf("reason = %s (%s), want %s", rej.Reason, rej.Detail, reason)
	}
	if rej.Detail == "" || len(rej.Detail) > 300 {
		t.Errorf("detail has %d bytes: %q", len(rej.Detail), rej.Detail)
	}
	for _, c := range []byte(rej.Detail) {
		if c < 0x20 || c >= 0x7f {
			t.Errorf("detail has byte 0x%02x: %q", c, rej.Detail)
			break
		}
	}
	return rej
}

func TestDecodeGoldenReadings(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/valid/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		file string
		want Reading
	}{
		{"basic", Reading{Version: 1, Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123,
			Metrics: []Metric{{"temperature_c", 21.5}, {"humidity_pct", 40.2}, {"battery_pct", 97.1}}}},
		{"field-order", Reading{Version: 1, Device: "th-00042", Boot: 0, Seq: 1, TS: 1764100000123,
			Metrics: []Metric{{"b", 2}, {"a", 1}}}},
		{"escapes", Reading{Version: 1, Device: "th-00042", Boot: 1, Seq: 1, TS: 1764100000123,
			Metrics: []Metric{{"temperature_c", 1}, {"humidity", 2}}}},
		{"max-uint", Reading{Version: 1, Device: "th-00042", Boot: math.MaxUint64, Seq: math.MaxUint64, TS: 1764100000123,
			Metrics: []Metric{{"temperature_c", 21.5}, {"humidity_pct", 40.2}, {"battery_pct", 97.1}}}},
		{"floats", Reading{Version: 1, Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123,
			Metrics: []Metric{{"neg_zero", math.Copysign(0, -1)}, {"neg_zero_frac", math.Copysign(0, -1)},
				{"max", math.MaxFloat64}, {"min_sub", math.SmallestNonzeroFloat64}, {"underflow", 0},
				{"exp_upper", 2500}, {"exp_plain", 100000}, {"neg_exp", -1.25e-7}, {"long", math.Pi},
				{"int", 42}, {"negative", -273.15}}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, got, err := Decode(testTopic, read(tt.file), testNow, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !sameReading(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// sameReading compares readings, floats bit for bit.
func sameReading(a, b Reading) bool {
	if a.Version != b.Version || a.Device != b.Device || a.Boot != b.Boot || a.Seq != b.Seq ||
		a.TS != b.TS || len(a.Metrics) != len(b.Metrics) {
		return false
	}
	for i := range a.Metrics {
		if a.Metrics[i].Name != b.Metrics[i].Name ||
			math.Float64bits(a.Metrics[i].Value) != math.Float64bits(b.Metrics[i].Value) {
			return false
		}
	}
	return true
}

func TestDecodeOrder(t *testing.T) {
	valid := []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1764100000123,"metrics":{"x":1}}`)
	big := make([]byte, MaxPayloadBytes+1)
	tests := []struct {
		name    string
		topic   string
		payload []byte
		want    Reason
	}{
		{"too large before bad topic", "nonsense", big, ReasonTooLarge},
		{"bad topic before bad json", "telemetry/us-east/thermo", []byte("{"), ReasonBadTopic},
		{"bad topic with a valid payload", "telemetry/us-east/thermo/TH-00042", valid, ReasonBadTopic},
		{"topic mismatch", "telemetry/us-east/thermo/th-00043", valid, ReasonTopicMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Decode(tt.topic, tt.payload, testNow, Limits{})
			checkRejection(t, err, tt.want)
		})
	}
}

func TestDecodeReturnsTopicAndReading(t *testing.T) {
	payload := []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1,"metrics":{"x":1}}`)
	topic, r, err := Decode(testTopic, payload, testNow, Limits{})
	checkRejection(t, err, ReasonStale)
	if topic.Device != "th-00042" || r.ID() != "th-00042:1:1" {
		t.Errorf("stale: topic %+v, reading %+v; want both filled in", topic, r)
	}
	topic, r, err = Decode(testTopic, []byte("{}"), testNow, Limits{})
	checkRejection(t, err, ReasonBadVersion)
	if topic.Device != "th-00042" || r.Device != "" {
		t.Errorf("bad_version: topic %+v, reading %+v; want the topic only", topic, r)
	}
}

func TestDecodeLimits(t *testing.T) {
	now := testNow.UnixMilli()
	lim := Limits{MaxAge: time.Hour, MaxSkew: time.Second}
	tests := []struct {
		name string
		ts   int64
		lim  Limits
		want Reason // empty: accepted
	}{
		{"now", now, lim, ""},
		{"oldest", now - 3600_000, lim, ""},
		{"too old", now - 3600_001, lim, ReasonStale},
		{"newest", now + 1000, lim, ""},
		{"too new", now + 1001, lim, ReasonFuture},
		{"default age", now - 24*3600_000, Limits{}, ""},
		{"default age exceeded", now - 24*3600_000 - 1, Limits{}, ReasonStale},
		{"default skew", now + 300_000, Limits{}, ""},
		{"default skew exceeded", now + 300_001, Limits{}, ReasonFuture},
		{"negative limits mean defaults", now - 2*3600_000, Limits{MaxAge: -1, MaxSkew: -1}, ""},
		{"min int64", math.MinInt64, Limits{MaxAge: math.MaxInt64}, ReasonStale},
		{"max int64", math.MaxInt64, Limits{MaxSkew: math.MaxInt64}, ReasonFuture},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Reading{Device: "th-00042", Boot: 1, Seq: 1, TS: tt.ts, Metrics: []Metric{{"x", 1}}}
			_, _, err := Decode(testTopic, AppendEncode(nil, r), testNow, tt.lim)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkRejection(t, err, tt.want)
		})
	}
}

func TestUnmarshalTooLarge(t *testing.T) {
	_, err := Unmarshal(make([]byte, MaxPayloadBytes+1))
	checkRejection(t, err, ReasonTooLarge)
}

func TestDecodeHostile(t *testing.T) {
	want := map[string]Reason{"many-fields": ReasonBadVersion, "many-escaped-fields": ReasonBadVersion,
		"long-array": ReasonBadField, "escaped-string": ReasonBadField, "nested-metrics": ReasonBadMetric}
	for name, payload := range hostilePayloads() {
		t.Run(name, func(t *testing.T) {
			_, _, err := Decode(testTopic, payload, testNow, Limits{})
			checkRejection(t, err, want[name])
		})
	}
}

// TestDuplicateFieldsManyMembers covers the hash set behind duplicate
// detection as it grows.
func TestDuplicateFieldsManyMembers(t *testing.T) {
	for _, n := range []int{1, 2, 7, 8, 9, 16, 17, 100, 400} {
		var b strings.Builder
		b.WriteString(`{"v":1`)
		for i := range n {
			fmt.Fprintf(&b, `,"k%d":0`, i)
		}
		distinct := b.String() + "}"
		_, err := Unmarshal([]byte(distinct))
		checkRejection(t, err, ReasonBadField) // unknown field k0
		for _, dupOf := range []int{0, n / 2, n - 1} {
			dup := b.String() + fmt.Sprintf(`,"\u006b%d":1}`, dupOf)
			_, err := Unmarshal([]byte(dup))
			rej := checkRejection(t, err, ReasonBadJSON)
			if want := fmt.Sprintf(`duplicate field "k%d"`, dupOf); rej.Detail != want {
				t.Errorf("%d members, duplicate of k%d: detail %q, want %q", n, dupOf, rej.Detail, want)
			}
		}
	}
}
