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
	// Version is the protocol version whose schema the case breaks: a
	// fleet sends the cases of version 2 only with Config.Batch > 1,
	// when its devices speak v2.
	Version int
	gen     func(dst []byte, in *chaosInput) (topic string, payload []byte)
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

// chaosCasesV1 are the hostile messages built from the v1 schema: each
// breaks one rule. Only this file knows their layout; ChaosCases lists them.
var chaosCasesV1 = []ChaosCase{
	// bad_json: not JSON, or JSON the protocol refuses to parse.
	{Name: "truncated", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		b := in.valid(dst, in.nowMS)
		return in.ownTopic(), b[:len(b)-9] // cut inside the metrics
	}},
	{Name: "not_json", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), fmt.Appendf(dst, `<reading id="%s" temperature="21.5"/>`, in.marker)
	}},
	{Name: "trailing_garbage", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), append(in.valid(dst, in.nowMS), "}\x00"...)
	}},
	{Name: "raw_control_character", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// An unescaped control character inside a string.
		return in.ownTopic(), in.withMetrics(dst, ",\"bell\x07\":1")
	}},
	{Name: "invalid_utf8", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, ",\"temp\xff\xfe\":1")
	}},
	{Name: "deep_nesting", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"x":`+strings.Repeat("[", 200)+"1"+strings.Repeat("]", 200))
	}},
	{Name: "duplicate_field", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("", "")+`,"seq":1`)
	}},

	// bad_version: v missing, of another type, or unknown.
	{Name: "unknown_version", Reason: protocol.ReasonBadVersion, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", "3"))
	}},
	{Name: "version_as_string", Reason: protocol.ReasonBadVersion, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", `"1"`))
	}},
	{Name: "version_fraction", Reason: protocol.ReasonBadVersion, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("v", "1.5"))
	}},
	{Name: "version_missing", Reason: protocol.ReasonBadVersion, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.fields("", in.dev(), in.u(in.boot), in.u(in.seq), in.i(in.nowMS)))
	}},

	// bad_field: wrong types, out of range, missing, unknown, odd names.
	{Name: "seq_as_string", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("seq", in.q(in.u(in.seq))))
	}},
	{Name: "seq_zero", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("seq", "0"))
	}},
	{Name: "boot_negative", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("boot", "-1"))
	}},
	{Name: "boot_overflow", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("boot", "18446744073709551616"))
	}},
	{Name: "ts_fraction", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("ts", in.i(in.nowMS)+".5"))
	}},
	{Name: "seq_missing", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.fields("1", in.dev(), in.u(in.boot), "", in.i(in.nowMS)))
	}},
	{Name: "unknown_field", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("", "")+`,"firmware":"1.2.3"`)
	}},
	{Name: "device_as_number", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", "42"))
	}},
	{Name: "device_unicode", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", `"capteur-é-🌡"`))
	}},
	{Name: "device_control_character", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// Escaped, so valid JSON, but no valid name.
		return in.ownTopic(), in.withHead(dst, in.head("device", `"th\u0000\u001b[31m"`))
	}},
	{Name: "device_too_long", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", in.q(strings.Repeat("a", 300))))
	}},

	// topic_mismatch: a valid reading of another device.
	{Name: "device_not_topic", Reason: protocol.ReasonTopicMismatch, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withHead(dst, in.head("device", `"impostor-00001"`))
	}},

	// bad_metric: values and names that break the metric rules.
	{Name: "value_as_string", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":"21.5"`)
	}},
	{Name: "value_null", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// What an encoder writes for NaN.
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":null`)
	}},
	{Name: "value_out_of_range", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":1e999`)
	}},
	{Name: "value_bool", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":true`)
	}},
	{Name: "value_object", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":{"value":21.5,"unit":"C"}`)
	}},
	{Name: "metric_name_unicode", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"température_°c":21.5`)
	}},
	{Name: "metric_name_control_character", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temp\u0000\r\nX-Injected: 1":21.5`)
	}},
	{Name: "metric_name_too_long", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"`+strings.Repeat("t", 1000)+`":21.5`)
	}},
	{Name: "metric_name_upper_case", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"Temperature":21.5`)
	}},
	{Name: "metric_duplicate", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"temperature_c":21.5,"temperature_c":22`)
	}},
	{Name: "metrics_not_object", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), fmt.Appendf(dst, `{%s,"metrics":%q}`, in.head("", ""), in.marker)
	}},
	{Name: "too_many_metrics", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		var b strings.Builder
		for k := range protocol.MaxMetrics {
			fmt.Fprintf(&b, `,"m%d":%d`, k, k)
		}
		return in.ownTopic(), in.withMetrics(dst, b.String())
	}},

	// stale and future: ts outside the window.
	{Name: "ts_day_old", Reason: protocol.ReasonStale, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS-(25*time.Hour).Milliseconds())
	}},
	{Name: "ts_negative", Reason: protocol.ReasonStale, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, -1)
	}},
	{Name: "ts_seconds_not_ms", Reason: protocol.ReasonStale, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS/1000)
	}},
	{Name: "ts_hour_ahead", Reason: protocol.ReasonFuture, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS+time.Hour.Milliseconds())
	}},
	{Name: "ts_max", Reason: protocol.ReasonFuture, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, 1<<63-1)
	}},
	{Name: "ts_microseconds", Reason: protocol.ReasonFuture, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.valid(dst, in.nowMS*1000)
	}},

	// too_large: above protocol.MaxPayloadBytes, checked before parsing.
	{Name: "oversized", Reason: protocol.ReasonTooLarge, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"pad":"`+strings.Repeat("x", protocol.MaxPayloadBytes)+`"`)
	}},
	{Name: "oversized_64k", Reason: protocol.ReasonTooLarge, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.withMetrics(dst, `,"x":`+strings.Repeat("[", 32<<10)+strings.Repeat("]", 32<<10))
	}},

	// No bad_topic: a device may publish only on its own topic
	// (internal/devicecred, deploy/mosquitto/acl), and the broker refuses
	// any other before it reaches ingest. Ingest's handling of bad topics
	// is tested behind a broker that lets anything through
	// (ingest/spoof_test.go) and by the protocol's fuzz targets.
}

// batchHead appends the fields of a v2 batch of the device before its
// readings, seq given raw, extra (raw JSON members, or nothing) after
// boot, and metrics given raw.
func (in *chaosInput) batchHead(dst []byte, seq, extra, metrics string) []byte {
	return fmt.Appendf(dst, `{"v":2,"device":%q,"boot":%d%s,"seq":%s,"metrics":%s,"readings":[`, in.device, in.boot, extra, seq, metrics)
}

// names is the metrics of a v2 batch: the marker and temperature_c.
func (in *chaosInput) names() string { return fmt.Sprintf(`[%q,"temperature_c"]`, in.marker) }

// rowTS is the ts of row k of rows readings, a second apart up to now.
func (in *chaosInput) rowTS(rows, k int) int64 { return in.nowMS - int64(rows-1-k)*1000 }

// batch appends a v2 batch of the device, seq given raw, its metrics
// names(), with rows valid readings [ts,1,21.5] a second apart up to now,
// but for row k (if 0 <= k < rows), which is raw(ts of row k).
func (in *chaosInput) batch(dst []byte, seq string, rows, k int, raw func(ts int64) string) []byte {
	dst = in.batchHead(dst, seq, "", in.names())
	return in.rows(dst, rows, k, raw)
}

// rows appends the readings and the end of a batch begun by batchHead.
func (in *chaosInput) rows(dst []byte, rows, k int, raw func(ts int64) string) []byte {
	for i := range rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		if i == k {
			dst = append(dst, raw(in.rowTS(rows, i))...)
			continue
		}
		dst = fmt.Appendf(dst, `[%d,1,21.5]`, in.rowTS(rows, i))
	}
	return append(dst, "]}"...)
}

// seqRaw is the hostile message's seq as JSON.
func (in *chaosInput) seqRaw() string { return in.u(in.seq) }

// chaosCasesV2 are the hostile messages built from the v2 schema, a batch
// of readings: most are batches of good readings with one bad, which
// rejects the whole batch (docs/PROTOCOL.md).
var chaosCasesV2 = []ChaosCase{
	// bad_json.
	{Name: "v2_truncated", Reason: protocol.ReasonBadJSON, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		b := in.batch(dst, in.seqRaw(), 10, -1, nil)
		return in.ownTopic(), b[:len(b)-9] // cut inside the last reading
	}},

	// bad_field: the batch's own fields and bounds, a row that is no row.
	{Name: "v2_seq_zero", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, "0", 10, -1, nil)
	}},
	{Name: "v2_seq_overflow", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// The second reading's seq would wrap around.
		return in.ownTopic(), in.batch(dst, "18446744073709551615", 2, -1, nil)
	}},
	{Name: "v2_too_many_readings", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), protocol.MaxBatchReadings+1, -1, nil)
	}},
	{Name: "v2_readings_empty", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 0, -1, nil)
	}},
	{Name: "v2_with_v1_ts", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// A v1 field in a v2 batch.
		dst = in.batchHead(dst, in.seqRaw(), `,"ts":`+in.i(in.nowMS), in.names())
		return in.ownTopic(), in.rows(dst, 10, -1, nil)
	}},
	{Name: "v2_row_not_array", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 1, func(ts int64) string {
			return fmt.Sprintf(`{"ts":%d,"temperature_c":21.5}`, ts)
		})
	}},
	{Name: "v2_ts_fraction", Reason: protocol.ReasonBadField, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 5, func(ts int64) string { return fmt.Sprintf(`[%d.5,1,21.5]`, ts) })
	}},

	// topic_mismatch.
	{Name: "v2_device_not_topic", Reason: protocol.ReasonTopicMismatch, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		other := *in
		other.device = "impostor-00001"
		return in.ownTopic(), other.batch(dst, in.seqRaw(), 10, -1, nil)
	}},

	// bad_metric: one bad value or row among good ones, bad names.
	{Name: "v2_bad_value_among_good", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// What an encoder writes for NaN, in the seventh of ten readings.
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 6, func(ts int64) string { return fmt.Sprintf(`[%d,1,null]`, ts) })
	}},
	{Name: "v2_value_as_string", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 3, func(ts int64) string { return fmt.Sprintf(`[%d,1,"21.5"]`, ts) })
	}},
	{Name: "v2_row_too_short", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 4, func(ts int64) string { return fmt.Sprintf(`[%d,1]`, ts) })
	}},
	{Name: "v2_row_too_long", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 2, func(ts int64) string { return fmt.Sprintf(`[%d,1,21.5,22]`, ts) })
	}},
	{Name: "v2_metrics_object", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		// The v1 form of metrics in a v2 batch.
		dst = in.batchHead(dst, in.seqRaw(), "", fmt.Sprintf(`{%q:1,"temperature_c":21.5}`, in.marker))
		return in.ownTopic(), in.rows(dst, 10, -1, nil)
	}},
	{Name: "v2_metric_duplicate", Reason: protocol.ReasonBadMetric, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		dst = in.batchHead(dst, in.seqRaw(), "", fmt.Sprintf(`[%q,"temperature_c","temperature_c"]`, in.marker))
		return in.ownTopic(), in.rows(dst, 3, 0, func(ts int64) string { return fmt.Sprintf(`[%d,1,21.5,22]`, ts) })
	}},

	// stale and future: one reading of a batch outside the window.
	{Name: "v2_stale_inside", Reason: protocol.ReasonStale, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 5, func(ts int64) string {
			return fmt.Sprintf(`[%d,1,21.5]`, ts-(25*time.Hour).Milliseconds())
		})
	}},
	{Name: "v2_future_inside", Reason: protocol.ReasonFuture, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), 10, 8, func(ts int64) string {
			return fmt.Sprintf(`[%d,1,21.5]`, ts+time.Hour.Milliseconds())
		})
	}},

	// too_large: above protocol.MaxBatchBytes, checked before parsing
	// (and above MaxBatchReadings, checked only after).
	{Name: "v2_oversized", Reason: protocol.ReasonTooLarge, gen: func(dst []byte, in *chaosInput) (string, []byte) {
		return in.ownTopic(), in.batch(dst, in.seqRaw(), v2OversizedRows, -1, nil)
	}},
}

// v2OversizedRows readings of [ts,1,21.5], 23 bytes each, make more than
// protocol.MaxBatchBytes.
const v2OversizedRows = protocol.MaxBatchBytes/23 + 100

// chaosCases are every hostile message, v1's then v2's: a case's number
// (ChaosMarker.Case) is its index here.
var chaosCases = func() []ChaosCase {
	out := make([]ChaosCase, 0, len(chaosCasesV1)+len(chaosCasesV2))
	for _, c := range chaosCasesV1 {
		c.Version = protocol.Version1
		out = append(out, c)
	}
	for _, c := range chaosCasesV2 {
		c.Version = protocol.Version2
		out = append(out, c)
	}
	return out
}()

// ChaosCases lists the hostile messages Config.Chaos sends, in the order of
// their numbers in ChaosMarker: those of protocol v1 first, sent by every
// fleet, then those of v2, sent also (drawn from every case) by a fleet
// with Config.Batch > 1.
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
// index in fleet order: a function of Seed, Batch, index and n, so that the
// cases of messages that never arrived are known too.
func (f *Fleet) ChaosCase(index int, n uint64) int {
	return chaosCaseOf(f.cfg.Seed, index, n, chaosCount(f.cfg.Batch))
}

// chaosCount is how many of chaosCases a fleet of batch draws from: v1's
// alone at 1 (the cases, and so the runs, of a v1 fleet are what they
// were before v2), every case with v2 batches.
func chaosCount(batch int) int {
	if batch > 1 {
		return len(chaosCases)
	}
	return len(chaosCasesV1)
}

// chaosCaseOf draws one of the first cases of chaosCases.
func chaosCaseOf(seed int64, index int, n uint64, cases int) int {
	x := uint64(seed) ^ uint64(index)<<40 ^ n
	// splitmix64's finaliser spreads neighbouring inputs over every case.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int(x % uint64(cases))
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
