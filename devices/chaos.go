package devices

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// ChaosCase is one kind of hostile message (Config.Chaos) and the reason
// code the pipeline must dead-letter it under.
type ChaosCase struct {
	Name   string
	Reason protocol.Reason
	gen    func(dst []byte, in *chaosInput) (topic string, payload []byte)
}

// chaosInput is what a generator builds from: the sending device, a marker
// that identifies the message, and the time.
type chaosInput struct {
	marker              string // a valid metric name, unique per message
	region, typ, device string
	boot, seq           uint64
	nowMS               int64
	topic               string // the device's own topic
}

// Every hostile message carries its marker (ChaosMarker) verbatim, so that
// whoever reads the dead letters can tell which message each one is, and
// check it got the reason it should. Most carry it as the name of a valid
// metric, which the checks before the broken part let through.

// valid appends a valid reading of the device whose metrics start with the
// marker, with ts instead of now when given.
func (in *chaosInput) valid(dst []byte, ts int64) []byte {
	return fmt.Appendf(dst, `{"v":1,"device":%q,"boot":%d,"seq":%d,"ts":%d,"metrics":{%q:1,"temperature_c":21.5}}`,
		in.device, in.boot, in.seq, ts, in.marker)
}

// withMetrics appends a reading whose metrics object is the marker metric
// followed by extra (raw JSON members, or nothing).
func (in *chaosInput) withMetrics(dst []byte, extra string) []byte {
	return fmt.Appendf(dst, `{"v":1,"device":%q,"boot":%d,"seq":%d,"ts":%d,"metrics":{%q:1%s}}`,
		in.device, in.boot, in.seq, in.nowMS, in.marker, extra)
}

// withHead appends a reading whose fields before metrics are head (raw
// JSON members), and whose metrics are valid with the marker.
func (in *chaosInput) withHead(dst []byte, head string) []byte {
	return fmt.Appendf(dst, `{%s,"metrics":{%q:1,"humidity_pct":40.2}}`, head, in.marker)
}

func (in *chaosInput) fields(v, device, boot, seq, ts string) string {
	var b strings.Builder
	sep := ""
	for _, f := range [...]struct{ k, v string }{{"v", v}, {"device", device}, {"boot", boot}, {"seq", seq}, {"ts", ts}} {
		if f.v == "" {
			continue // left out
		}
		fmt.Fprintf(&b, `%s"%s":%s`, sep, f.k, f.v)
		sep = ","
	}
	return b.String()
}

func (in *chaosInput) q(s string) string { return strconv.Quote(s) }
func (in *chaosInput) u(v uint64) string { return strconv.FormatUint(v, 10) }
func (in *chaosInput) i(v int64) string  { return strconv.FormatInt(v, 10) }
func (in *chaosInput) dev() string       { return in.q(in.device) }
func (in *chaosInput) ownTopic() string  { return in.topic }

// head builds the fields before metrics with one of them replaced.
func (in *chaosInput) head(field, raw string) string {
	v, device, boot, seq, ts := "1", in.dev(), in.u(in.boot), in.u(in.seq), in.i(in.nowMS)
	switch field {
	case "v":
		v = raw
	case "device":
		device = raw
	case "boot":
		boot = raw
	case "seq":
		seq = raw
	case "ts":
		ts = raw
	}
	return in.fields(v, device, boot, seq, ts)
}

// chaosCases are the hostile messages, built from the v1 schema: each
// breaks one rule. Only this file knows their layout; ChaosCases lists them.
var chaosCases = []ChaosCase{
	// bad_json: not JSON, or JSON the protocol refuses to parse.
	{"truncated", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		b := in.valid(dst, in.nowMS)
		return in.ownTopic(), b[:len(b)-9] // cut inside the metrics
	}},
	{"not_json", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), fmt.Appendf(dst, `<reading id="%s" temperature="21.5"/>`, in.marker)
	}},
	{"trailing_garbage", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), append(in.valid(dst, in.nowMS), "}\x00"...)
	}},
	{"raw_control_character", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		// An unescaped control character inside a string.
		return in.ownTopic(), in.withMetrics(dst, ",\"bell\x07\":1")
	}},
	{"invalid_utf8", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, ",\"temp\xff\xfe\":1")
	}},
	{"deep_nesting", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"x":`+strings.Repeat("[", 200)+"1"+strings.Repeat("]", 200))
	}},
	{"duplicate_field", protocol.ReasonBadJSON, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("", "")+`,"seq":1`)
	}},

	// bad_version: v missing, of another type, or unknown.
	{"unknown_version", protocol.ReasonBadVersion, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", "2"))
	}},
	{"version_as_string", protocol.ReasonBadVersion, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", `"1"`))
	}},
	{"version_fraction", protocol.ReasonBadVersion, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", "1.5"))
	}},
	{"version_missing", protocol.ReasonBadVersion, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.fields("", in.dev(), in.u(in.boot), in.u(in.seq), in.i(in.nowMS)))
	}},

	// bad_field: wrong types, out of range, missing, unknown, odd names.
	{"seq_as_string", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("seq", in.q(in.u(in.seq))))
	}},
	{"seq_zero", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("seq", "0"))
	}},
	{"boot_negative", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("boot", "-1"))
	}},
	{"boot_overflow", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("boot", "18446744073709551616"))
	}},
	{"ts_fraction", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("ts", in.i(in.nowMS)+".5"))
	}},
	{"seq_missing", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.fields("1", in.dev(), in.u(in.boot), "", in.i(in.nowMS)))
	}},
	{"unknown_field", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("", "")+`,"firmware":"1.2.3"`)
	}},
	{"device_as_number", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", "42"))
	}},
	{"device_unicode", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", `"capteur-é-🌡"`))
	}},
	{"device_control_character", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		// Escaped, so valid JSON, but no valid name.
		return in.ownTopic(), in.withHead(dst, in.head("device", `"th\u0000\u001b[31m"`))
	}},
	{"device_too_long", protocol.ReasonBadField, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", in.q(strings.Repeat("a", 300))))
	}},

	// topic_mismatch: a valid reading of another device.
	{"device_not_topic", protocol.ReasonTopicMismatch, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", `"impostor-00001"`))
	}},

	// bad_metric: values and names that break the metric rules.
	{"value_as_string", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":"21.5"`)
	}},
	{"value_null", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		// What an encoder writes for NaN.
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":null`)
	}},
	{"value_out_of_range", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":1e999`)
	}},
	{"value_bool", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":true`)
	}},
	{"value_object", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":{"value":21.5,"unit":"C"}`)
	}},
	{"metric_name_unicode", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"température_°c":21.5`)
	}},
	{"metric_name_control_character", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temp\u0000\r\nX-Injected: 1":21.5`)
	}},
	{"metric_name_too_long", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"`+strings.Repeat("t", 1000)+`":21.5`)
	}},
	{"metric_name_upper_case", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"Temperature":21.5`)
	}},
	{"metric_duplicate", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":21.5,"temperature_c":22`)
	}},
	{"metrics_not_object", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), fmt.Appendf(dst, `{%s,"metrics":%q}`, in.head("", ""), in.marker)
	}},
	{"too_many_metrics", protocol.ReasonBadMetric, func(dst []byte, in *chaosInput) (string, []byte) {
		var b strings.Builder
		for k := range protocol.MaxMetrics {
			fmt.Fprintf(&b, `,"m%d":%d`, k, k)
		}
		return in.ownTopic(), in.withMetrics(dst, b.String())
	}},

	// stale and future: ts outside the window.
	{"ts_day_old", protocol.ReasonStale, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS-(25*time.Hour).Milliseconds())
	}},
	{"ts_negative", protocol.ReasonStale, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, -1)
	}},
	{"ts_seconds_not_ms", protocol.ReasonStale, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS/1000)
	}},
	{"ts_hour_ahead", protocol.ReasonFuture, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS+time.Hour.Milliseconds())
	}},
	{"ts_max", protocol.ReasonFuture, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, 1<<63-1)
	}},
	{"ts_microseconds", protocol.ReasonFuture, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS*1000)
	}},

	// too_large: above protocol.MaxPayloadBytes, checked before parsing.
	{"oversized", protocol.ReasonTooLarge, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"pad":"`+strings.Repeat("x", protocol.MaxPayloadBytes)+`"`)
	}},
	{"oversized_64k", protocol.ReasonTooLarge, func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"x":`+strings.Repeat("[", 32<<10)+strings.Repeat("]", 32<<10))
	}},

	// No bad_topic: a device may publish only on its own topic
	// (internal/devicecred, deploy/mosquitto/acl), and the broker refuses
	// any other before it reaches ingest. Ingest's handling of bad topics
	// is tested behind a broker that lets anything through
	// (ingest/spoof_test.go) and by the protocol's fuzz targets.
}

// ChaosCases lists the hostile messages Config.Chaos sends, in the order of
// their numbers in ChaosMarker.
func ChaosCases() []ChaosCase { return chaosCases }

// ChaosReasons are the reasons ChaosCases covers: every protocol.Reason but
// bad_topic, which the broker refuses before ingest sees it.
func ChaosReasons() []protocol.Reason {
	var out []protocol.Reason
	for _, r := range protocol.Reasons {
		if r != protocol.ReasonBadTopic {
			out = append(out, r)
		}
	}
	return out
}

// chaosPrefix starts every marker.
const chaosPrefix = "chaos_"

// ChaosMarker identifies a hostile message: the fleet's run (its Config.Boot
// as it started), the device's index in fleet order, the device's hostile
// message number n from 1, and the case. It is a valid metric name, and
// appears verbatim in the message's payload.
type ChaosMarker struct {
	Run    uint64
	Device int
	N      uint64
	Case   int
}

func (m ChaosMarker) String() string {
	return fmt.Sprintf("%s%d_%d_%d_%d", chaosPrefix, m.Run, m.Device, m.N, m.Case)
}

// FindChaosMarker finds the marker in a payload a fleet sent with Chaos.
func FindChaosMarker(payload []byte) (ChaosMarker, bool) {
	i := bytes.Index(payload, []byte(chaosPrefix))
	if i < 0 {
		return ChaosMarker{}, false
	}
	rest := payload[i+len(chaosPrefix):]
	var nums [4]uint64
	for k := range nums {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 {
			return ChaosMarker{}, false
		}
		v, err := strconv.ParseUint(string(rest[:j]), 10, 64)
		if err != nil {
			return ChaosMarker{}, false
		}
		nums[k] = v
		rest = rest[j:]
		if k < 3 {
			if len(rest) == 0 || rest[0] != '_' {
				return ChaosMarker{}, false
			}
			rest = rest[1:]
		}
	}
	if nums[3] >= uint64(len(chaosCases)) || nums[1] > MaxDevices {
		return ChaosMarker{}, false
	}
	return ChaosMarker{Run: nums[0], Device: int(nums[1]), N: nums[2], Case: int(nums[3])}, true
}

// ChaosCase returns the case of hostile message n (from 1) of the device at
// index in fleet order: a function of Seed, index and n, so that the cases
// of messages that never arrived are known too.
func (f *Fleet) ChaosCase(index int, n uint64) int {
	return chaosCaseOf(f.cfg.Seed, index, n)
}

func chaosCaseOf(seed int64, index int, n uint64) int {
	x := uint64(seed) ^ uint64(index)<<40 ^ n
	// splitmix64's finaliser spreads neighbouring inputs over every case.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int(x % uint64(len(chaosCases)))
}

// chaos appends hostile message n of device d to dst and returns its topic.
func (f *Fleet) chaos(dst []byte, d *device, n uint64, now time.Time) (string, []byte) {
	k := f.ChaosCase(d.index, n)
	in := &chaosInput{
		marker: ChaosMarker{Run: f.cfg.Boot, Device: d.index, N: n, Case: k}.String(),
		region: d.region, typ: d.typ, device: d.id,
		// A seq far above any reading's, so that a hostile message let
		// through by mistake cannot stand in for a real reading.
		boot: d.cur.boot, seq: 1<<53 + n,
		nowMS: now.UnixMilli(),
		topic: d.topic,
	}
	return chaosCases[k].gen(dst, in)
}
