package protocol

import (
	"bytes"
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
	"bad_version/string":                        "got string",
	"bad_version/float":                         "got \"1.0\"",
	"bad_version/three":                         "unsupported version 3",
	"bad_version/wrong-before-bad-field":        "unsupported version 3",
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
			topic, b, err := Decode(testTopic, g.payload, testNow, Limits{})
			if g.reason == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if want := (Topic{"us-east", "thermo", "th-00042"}); topic != want {
					t.Errorf("topic = %+v, want %+v", topic, want)
				}
				checkBatch(t, b)
				if b.Version != Version1 || b.Device != "th-00042" || len(b.Readings) != 1 || len(b.Readings[0].Metrics) == 0 {
					t.Errorf("batch = %+v, want one v1 reading of th-00042", b)
				}
				u, err := Unmarshal(g.payload)
				if err != nil || !sameBatch(u, b) {
					t.Errorf("Unmarshal = %+v, %v; want %+v", u, err, b)
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
			want := Batch{Version: Version1, Device: tt.want.Device, Boot: tt.want.Boot, Readings: []Reading{tt.want}}
			if !sameBatch(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
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

// sameBatch compares batches, floats bit for bit.
func sameBatch(a, b Batch) bool {
	if a.Version != b.Version || a.Device != b.Device || a.Boot != b.Boot || len(a.Readings) != len(b.Readings) {
		return false
	}
	for i := range a.Readings {
		if !sameReading(a.Readings[i], b.Readings[i]) {
			return false
		}
	}
	return true
}

// checkBatch asserts what every decoded batch holds: at least one reading,
// each of the batch's version, device and boot, with consecutive seqs.
func checkBatch(t testing.TB, b Batch) {
	t.Helper()
	if len(b.Readings) == 0 {
		t.Fatalf("batch %+v has no readings", b)
	}
	for i, r := range b.Readings {
		if r.Version != b.Version || r.Device != b.Device || r.Boot != b.Boot {
			t.Fatalf("readings[%d] = %+v, not of batch v%d %s boot %d", i, r, b.Version, b.Device, b.Boot)
		}
		if r.Seq != b.First()+uint64(i) {
			t.Fatalf("readings[%d] has seq %d, want %d", i, r.Seq, b.First()+uint64(i))
		}
	}
}

func TestDecodeOrder(t *testing.T) {
	valid := []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1764100000123,"metrics":{"x":1}}`)
	big := make([]byte, MaxBatchBytes+1)
	bigV1 := append(valid[:len(valid):len(valid)], bytes.Repeat([]byte(" "), MaxPayloadBytes+1-len(valid))...)
	bigV2 := []byte(pad(v2With(), MaxPayloadBytes+2))
	tests := []struct {
		name    string
		topic   string
		payload []byte
		want    Reason
	}{
		{"too large before bad topic", "nonsense", big, ReasonTooLarge},
		{"v1 too large before bad topic", "nonsense", bigV1, ReasonTooLarge},
		{"v1 too large before bad json", testTopic, append(bigV1[:len(bigV1)-1:len(bigV1)-1], '}'), ReasonTooLarge},
		{"bad topic before a batch over 4 KiB", "nonsense", bigV2, ReasonBadTopic},
		{"bad json of a batch over 4 KiB", testTopic, bigV2[:len(bigV2)-1], ReasonBadJSON},
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
	topic, b, err := Decode(testTopic, payload, testNow, Limits{})
	checkRejection(t, err, ReasonStale)
	if topic.Device != "th-00042" || len(b.Readings) != 1 || b.ID() != "th-00042:1:1" {
		t.Errorf("stale: topic %+v, batch %+v; want both filled in", topic, b)
	}
	topic, b, err = Decode(testTopic, []byte("{}"), testNow, Limits{})
	checkRejection(t, err, ReasonBadVersion)
	if topic.Device != "th-00042" || b.Device != "" || b.Readings != nil {
		t.Errorf("bad_version: topic %+v, batch %+v; want the topic only", topic, b)
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
	_, err := Unmarshal(make([]byte, MaxBatchBytes+1))
	rej := checkRejection(t, err, ReasonTooLarge)
	if want := "payload is 65537 bytes, max 65536"; !strings.Contains(rej.Detail, want) {
		t.Errorf("detail %q does not contain %q", rej.Detail, want)
	}
	v1 := AppendEncode(nil, Reading{Device: "th-00042", Boot: 1, Seq: 1, TS: 1, Metrics: []Metric{{"x", 1}}})
	v1 = append(v1, bytes.Repeat([]byte("\n"), MaxPayloadBytes+1-len(v1))...)
	_, err = Unmarshal(v1)
	rej = checkRejection(t, err, ReasonTooLarge)
	if want := "payload is 4097 bytes, max 4096"; !strings.Contains(rej.Detail, want) {
		t.Errorf("detail %q does not contain %q", rej.Detail, want)
	}
	// Under MaxPayloadBytes, the same reading is accepted.
	if _, err := Unmarshal(v1[:MaxPayloadBytes]); err != nil {
		t.Errorf("v1 payload of %d bytes: %v", MaxPayloadBytes, err)
	}
}

func TestDecodeHostile(t *testing.T) {
	want := map[string]struct {
		reason Reason
		detail string
	}{
		"many-fields":          {ReasonBadVersion, "missing field v"},
		"many-escaped-fields":  {ReasonBadVersion, "missing field v"},
		"long-array":           {ReasonBadField, `unknown field "x"`},
		"escaped-string":       {ReasonBadField, `unknown field "x"`},
		"nested-metrics":       {ReasonBadMetric, "metrics has 251 entries, max 32"},
		"batch-many-fields":    {ReasonBadField, `unknown field "k0"`},
		"batch-long-readings":  {ReasonBadField, "max 500"},
		"batch-long-row":       {ReasonBadMetric, "readings[0] (seq 1): has "},
		"batch-many-names":     {ReasonBadMetric, "max 32"},
		"batch-late-bad-value": {ReasonBadMetric, `readings[499] (seq 500): metric "m31" value "1e999" is out of float64 range`},
		"batch-late-stale":     {ReasonStale, "readings[499] (seq 500): ts 1 is more than 24h0m0s before now"},
	}
	payloads := hostilePayloads()
	if len(payloads) != len(want) {
		t.Errorf("%d hostile payloads, %d expectations", len(payloads), len(want))
	}
	for name, payload := range payloads {
		t.Run(name, func(t *testing.T) {
			limit := MaxPayloadBytes
			if strings.HasPrefix(name, "batch-") {
				limit = MaxBatchBytes
			}
			if len(payload) > limit || len(payload) < limit*7/10 {
				t.Errorf("payload has %d bytes, want near the limit, %d", len(payload), limit)
			}
			_, _, err := Decode(testTopic, payload, testNow, Limits{})
			rej := checkRejection(t, err, want[name].reason)
			if !strings.Contains(rej.Detail, want[name].detail) {
				t.Errorf("detail %q does not contain %q", rej.Detail, want[name].detail)
			}
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
