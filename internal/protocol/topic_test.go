package protocol

import (
	"math"
	"strings"
	"testing"
	"time"
)

var badTopics = []struct{ name, topic, detail string }{
	{"empty", "", "has 1 levels"},
	{"three levels", "telemetry/us-east/thermo", "has 3 levels"},
	{"five levels", "telemetry/us-east/thermo/th-1/x", "has 5 levels"},
	{"trailing slash", "telemetry/us-east/thermo/th-1/", "has 5 levels"},
	{"leading slash", "/telemetry/us-east/thermo", `does not start with "telemetry/"`},
	{"wrong root", "telemetri/us-east/thermo/th-1", `does not start with "telemetry/"`},
	{"root case", "Telemetry/us-east/thermo/th-1", `does not start with`},
	{"empty region", "telemetry//thermo/th-1", `region "" does not match`},
	{"empty device", "telemetry/us-east/thermo/", `device-id "" does not match`},
	{"upper case type", "telemetry/us-east/Thermo/th-1", `device-type "Thermo"`},
	{"wildcard plus", "telemetry/+/thermo/th-1", `region "+"`},
	{"wildcard hash", "telemetry/us-east/thermo/#", `device-id "#"`},
	{"dot", "telemetry/us.east/thermo/th-1", `region "us.east"`},
	{"leading hyphen", "telemetry/us-east/thermo/-th", `device-id "-th"`},
	{"unicode", "telemetry/us-east/thermo/th-\u00e9", `"th-\u00e9"`},
	{"control char", "telemetry/us-east/thermo/th\x00", `"th\x00"`},
	{"space", "telemetry/us-east/thermo/th 1", `"th 1"`},
	{"too long", "telemetry/us-east/thermo/" + strings.Repeat("a", 64), "device-id"},
	{"very long", "telemetry/us-east/thermo/" + strings.Repeat("a", 10000), `"...`},
	{"very long levels", strings.Repeat("a", 10000) + "/b/c/d", `"...`},
}

func TestParseTopic(t *testing.T) {
	good := []struct {
		topic string
		want  Topic
	}{
		{"telemetry/us-east/thermo/th-00042", Topic{"us-east", "thermo", "th-00042"}},
		{"telemetry/a/b/c", Topic{"a", "b", "c"}},
		{"telemetry/0/1-/2--", Topic{"0", "1-", "2--"}},
		{"telemetry/" + strings.Repeat("r", 63) + "/t/d", Topic{strings.Repeat("r", 63), "t", "d"}},
	}
	for _, tt := range good {
		got, err := ParseTopic(tt.topic)
		if err != nil || got != tt.want {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v", tt.topic, got, err, tt.want)
		}
		if got.String() != tt.topic {
			t.Errorf("String() = %q, want %q", got.String(), tt.topic)
		}
	}
	for _, tt := range badTopics {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTopic(tt.topic)
			rej := checkRejection(t, err, ReasonBadTopic)
			if !strings.Contains(rej.Detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", rej.Detail, tt.detail)
			}
			payload := []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1764100000123,"metrics":{"x":1}}`)
			_, _, err = Decode(tt.topic, payload, testNow, Limits{})
			checkRejection(t, err, ReasonBadTopic)
		})
	}
}

func TestTopicSubject(t *testing.T) {
	tp := Topic{Region: "eu-west", DeviceType: "thermo", Device: "th-7"}
	if got, want := tp.Subject(), "telemetry.eu-west.thermo.th-7"; got != want {
		t.Errorf("Subject() = %q, want %q", got, want)
	}
	if got, want := tp.String(), "telemetry/eu-west/thermo/th-7"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestReadingIDAndTime(t *testing.T) {
	r := Reading{Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123}
	if got, want := r.ID(), "th-00042:1764100000:17"; got != want {
		t.Errorf("ID() = %q, want %q", got, want)
	}
	r = Reading{Device: strings.Repeat("d", 63), Boot: 1<<64 - 1, Seq: 1<<64 - 1}
	if got, want := r.ID(), strings.Repeat("d", 63)+":18446744073709551615:18446744073709551615"; got != want {
		t.Errorf("ID() = %q, want %q", got, want)
	}
	r = Reading{TS: 1764100000123}
	if got, want := r.Time(), time.Date(2025, 11, 25, 19, 46, 40, 123e6, time.UTC); !got.Equal(want) {
		t.Errorf("Time() = %v, want %v", got, want)
	}
}

func TestBatchID(t *testing.T) {
	long := strings.Repeat("d", 63)
	reading := func(dev string, boot, seq uint64) Reading { return Reading{Device: dev, Boot: boot, Seq: seq} }
	tests := []struct {
		name                string
		b                   Batch
		want                string
		wantFirst, wantLast uint64
	}{
		{"v1", Batch{Version: Version1, Device: "th-00042", Boot: 1764100000,
			Readings: []Reading{reading("th-00042", 1764100000, 17)}}, "th-00042:1764100000:17", 17, 17},
		{"no version is v1", Batch{Readings: []Reading{reading("th-1", 2, 3)}}, "th-1:2:3", 3, 3},
		{"v2", Batch{Version: Version2, Device: "th-00042", Boot: 1764100000,
			Readings: []Reading{reading("th-00042", 1764100000, 17), reading("th-00042", 1764100000, 18)}},
			"th-00042:1764100000:17-18", 17, 18},
		{"v2 of one reading", Batch{Version: Version2, Device: "th-00042", Boot: 0,
			Readings: []Reading{reading("th-00042", 0, 5)}}, "th-00042:0:5-5", 5, 5},
		{"v2 longest", Batch{Version: Version2, Device: long, Boot: math.MaxUint64,
			Readings: []Reading{reading(long, math.MaxUint64, math.MaxUint64-1), reading(long, math.MaxUint64, math.MaxUint64)}},
			long + ":18446744073709551615:18446744073709551614-18446744073709551615", math.MaxUint64 - 1, math.MaxUint64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.ID(); got != tt.want {
				t.Errorf("ID() = %q, want %q", got, tt.want)
			}
			if f, l := tt.b.First(), tt.b.Last(); f != tt.wantFirst || l != tt.wantLast {
				t.Errorf("First(), Last() = %d, %d; want %d, %d", f, l, tt.wantFirst, tt.wantLast)
			}
		})
	}
	// Decoded: the v1 batch's id is its reading's, and a v2 batch names
	// its first and last seq.
	_, v1, err := Decode(testTopic, []byte(v1Example), testNow, Limits{})
	if err != nil || v1.ID() != "th-00042:1764100000:17" || v1.ID() != v1.Readings[0].ID() {
		t.Errorf("v1: ID() = %q, %v; want th-00042:1764100000:17", v1.ID(), err)
	}
	_, v2, err := Decode(testTopic, []byte(v2With("readings", rows(500, row))), testNow, Limits{})
	if err != nil || v2.ID() != "th-00042:1764100000:17-516" {
		t.Errorf("v2: ID() = %q, %v; want th-00042:1764100000:17-516", v2.ID(), err)
	}
}

func TestValidNames(t *testing.T) {
	tests := []struct {
		s            string
		name, metric bool
	}{
		{"th-00042", true, false},
		{"temperature_c", false, true},
		{"a", true, true},
		{"0", true, false},
		{"a1", true, true},
		{"", false, false},
		{"-a", false, false},
		{"_a", false, false},
		{"a-", true, false},
		{"a_", false, true},
		{"A", false, false},
		{"a b", false, false},
		{"a.b", false, false},
		{"a/b", false, false},
		{"\u00e9", false, false},
		{"a\x00", false, false},
		{strings.Repeat("a", 63), true, true},
		{strings.Repeat("a", 64), false, false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.s); got != tt.name {
			t.Errorf("ValidName(%q) = %v, want %v", tt.s, got, tt.name)
		}
		if got := ValidMetricName(tt.s); got != tt.metric {
			t.Errorf("ValidMetricName(%q) = %v, want %v", tt.s, got, tt.metric)
		}
	}
}

func TestQuote(t *testing.T) {
	long := strings.Repeat("a", 100)
	tests := []struct{ in, want string }{
		{"", `""`},
		{"th-00042", `"th-00042"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\x00\n\x1b\x7f", `"\x00\x0a\x1b\x7f"`},
		{"\u00e9\U0001F600", `"\u00e9\U0001f600"`},
		{"\xff\xc0", `"\xff\xc0"`},
		{long, `"` + long[:maxEcho] + `"...`},
		{strings.Repeat("\xff", 100), `"` + strings.Repeat(`\xff`, maxEcho/4) + `"...`},
		{strings.Repeat("a", maxEcho), `"` + long[:maxEcho] + `"`},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if got := quote([]byte(tt.in)); got != tt.want {
			t.Errorf("quote([]byte(%q)) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
