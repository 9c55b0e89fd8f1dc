package protocol

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// v2Example is the batch of docs/PROTOCOL.md, member by member, each value
// as raw JSON; v2With edits it.
var v2Example = [][2]string{
	{"v", "2"},
	{"device", `"th-00042"`},
	{"boot", "1764100000"},
	{"seq", "17"},
	{"metrics", `["temperature_c","humidity_pct"]`},
	{"readings", `[[1764100000123,21.5,40.2],[1764100001123,21.6,40.1]]`},
}

// v2With returns v2Example with edits, pairs of a name and raw JSON: the
// member's value is replaced, removed when raw is "", or added at the end
// when v2Example has no such member.
func v2With(edits ...string) string {
	members := append([][2]string(nil), v2Example...)
	for i := 0; i < len(edits); i += 2 {
		name, raw := edits[i], edits[i+1]
		j := 0
		for j < len(members) && members[j][0] != name {
			j++
		}
		switch {
		case j == len(members):
			members = append(members, [2]string{name, raw})
		case raw == "":
			members = append(members[:j], members[j+1:]...)
		default:
			members[j][1] = raw
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", m[0], m[1])
	}
	b.WriteByte('}')
	return b.String()
}

// rows returns a JSON array of n rows, row(i) each.
func rows(n int, row func(i int) string) string {
	s := make([]string, n)
	for i := range s {
		s[i] = row(i)
	}
	return "[" + strings.Join(s, ",") + "]"
}

// row is the i-th reading of a batch of v2Example's two metrics, ts
// 100 ms apart from the example's first, within the default window of
// testNow for up to 500 readings.
func row(i int) string { return fmt.Sprintf("[%d,21.5,40.2]", 1764100000123+100*int64(i)) }

// rowsWith returns 6 rows, row(i) each except rows[k], which is raw.
func rowsWith(k int, raw string) string {
	return rows(6, func(i int) string {
		if i == k {
			return raw
		}
		return row(i)
	})
}

// names returns a metrics array of n distinct names.
func names(n int) string {
	return rows(n, func(i int) string { return fmt.Sprintf(`"m%d"`, i) })
}

// pad fills payload with spaces before its closing brace up to n bytes.
func pad(payload string, n int) string {
	return payload[:len(payload)-1] + strings.Repeat(" ", n-len(payload)) + "}"
}

const v1Example = `{"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100000123,"metrics":{"temperature_c":21.5}}`

type v2Reject struct {
	name    string
	payload string
	reason  Reason
	// detail is what the Rejection's Detail must contain: substrings
	// separated by " … ", in that order.
	detail string
	// unmarshal is Unmarshal's reason where it differs from reason;
	// Unmarshal must accept a batch Decode rejects for its topic or
	// time window alone.
	unmarshal Reason
}

// v2Rejected are hostile batches, at most one fault each unless the name
// says which of two faults is reported.
func v2Rejected() []v2Reject {
	now := testNow.UnixMilli()
	return []v2Reject{
		// Members.
		{name: "missing v", payload: v2With("v", ""), reason: ReasonBadVersion, detail: "missing field v"},
		{name: "missing device", payload: v2With("device", ""), reason: ReasonBadField, detail: "missing field device"},
		{name: "missing boot", payload: v2With("boot", ""), reason: ReasonBadField, detail: "missing field boot"},
		{name: "missing seq", payload: v2With("seq", ""), reason: ReasonBadField, detail: "missing field seq"},
		{name: "missing metrics", payload: v2With("metrics", ""), reason: ReasonBadField, detail: "missing field metrics"},
		{name: "missing readings", payload: v2With("readings", ""), reason: ReasonBadField, detail: "missing field readings"},
		{name: "only v", payload: `{"v":2}`, reason: ReasonBadField, detail: "missing field device"},
		{name: "unknown field", payload: v2With("extra", "1"), reason: ReasonBadField, detail: `unknown field "extra"`},
		{name: "v1 ts in a batch", payload: v2With("ts", "1764100000123"), reason: ReasonBadField, detail: `unknown field "ts"`},
		{name: "names are case-sensitive", payload: v2With("seq", "", "Seq", "17"), reason: ReasonBadField, detail: `unknown field "Seq"`},
		{name: "duplicate member", payload: v2With("readings", `[[1764100000123,1,2]],"readings":[[1764100000123,1,2]]`),
			reason: ReasonBadJSON, detail: `duplicate field "readings"`},

		// Version.
		{name: "version 3", payload: v2With("v", "3"), reason: ReasonBadVersion, detail: "unsupported version 3"},
		{name: "version 3 before bad fields", payload: v2With("v", "3", "seq", "-1", "junk", "true"),
			reason: ReasonBadVersion, detail: "unsupported version 3"},
		{name: "version as a string", payload: v2With("v", `"2"`), reason: ReasonBadVersion, detail: "v must be a number, got string"},
		{name: "version 2.0", payload: v2With("v", "2.0"), reason: ReasonBadVersion, detail: `got "2.0"`},

		// device, boot, seq.
		{name: "device not the topic's", payload: v2With("device", `"th-00043"`), reason: ReasonTopicMismatch,
			detail: `device "th-00043" differs from the topic's device-id "th-00042"`},
		{name: "device upper case", payload: v2With("device", `"TH-00042"`), reason: ReasonBadField,
			detail: `device "TH-00042" does not match ^[a-z0-9][a-z0-9-]{0,62}$`},
		{name: "device with an escaped slash", payload: v2With("device", `"th\/00042"`), reason: ReasonBadField,
			detail: `device "th/00042" does not match`},
		{name: "device number", payload: v2With("device", "42"), reason: ReasonBadField, detail: "device must be a string, got number"},
		{name: "boot string", payload: v2With("boot", `"1"`), reason: ReasonBadField, detail: "boot must be an unsigned integer, got string"},
		{name: "boot overflow", payload: v2With("boot", "18446744073709551616"), reason: ReasonBadField,
			detail: `boot "18446744073709551616" overflows uint64`},
		{name: "seq 0", payload: v2With("seq", "0"), reason: ReasonBadField, detail: "seq must be at least 1, got 0"},
		{name: "seq negative", payload: v2With("seq", "-1"), reason: ReasonBadField, detail: `seq must be an unsigned integer, got "-1"`},
		{name: "seq of the second reading overflows", payload: v2With("seq", "18446744073709551615"), reason: ReasonBadField,
			detail: "seq 18446744073709551615 plus 2 readings overflows uint64"},
		{name: "seq of the 500th reading overflows", payload: v2With("seq", "18446744073709551117", "readings", rows(500, row)),
			reason: ReasonBadField, detail: "seq 18446744073709551117 plus 500 readings overflows uint64"},

		// readings.
		{name: "readings an object", payload: v2With("readings", `{"0":[1764100000123,21.5,40.2]}`), reason: ReasonBadField,
			detail: "readings must be an array, got object"},
		{name: "readings null", payload: v2With("readings", "null"), reason: ReasonBadField, detail: "readings must be an array, got null"},
		{name: "readings a row", payload: v2With("readings", "[1764100000123,21.5,40.2]"), reason: ReasonBadField,
			detail: "readings[0] (seq 17): must be an array [ts, value, ...], got number"},
		{name: "readings empty", payload: v2With("readings", "[]"), reason: ReasonBadField, detail: "readings is empty"},
		{name: "readings 501", payload: v2With("readings", rows(501, row)), reason: ReasonBadField,
			detail: "readings has 501 entries, max 500"},
		{name: "row an object", payload: v2With("readings", rowsWith(1, `{"ts":1764100000223}`)), reason: ReasonBadField,
			detail: "readings[1] (seq 18): must be an array [ts, value, ...], got object"},
		{name: "row a string", payload: v2With("readings", rowsWith(5, `"1764100000623,1,2"`)), reason: ReasonBadField,
			detail: "readings[5] (seq 22): must be an array [ts, value, ...], got string"},
		{name: "row empty", payload: v2With("readings", rowsWith(1, "[]")), reason: ReasonBadMetric,
			detail: "readings[1] (seq 18): has 0 entries, want ts and 2 values"},
		{name: "row without ts", payload: v2With("readings", rowsWith(2, "[21.5,40.2]")), reason: ReasonBadMetric,
			detail: "readings[2] (seq 19): has 2 entries, want ts and 2 values"},
		{name: "row with too many values", payload: v2With("readings", rowsWith(3, "[1764100000423,21.5,40.2,1]")), reason: ReasonBadMetric,
			detail: "readings[3] (seq 20): has 4 entries, want ts and 2 values"},
		{name: "ts with a fraction", payload: v2With("readings", rowsWith(1, "[1764100000223.5,21.5,40.2]")), reason: ReasonBadField,
			detail: `readings[1] … ts must be an integer, got "1764100000223.5"`},
		{name: "ts with an exponent", payload: v2With("readings", rowsWith(1, "[1.764100000223e12,21.5,40.2]")), reason: ReasonBadField,
			detail: `readings[1] … ts must be an integer, got "1.764100000223e12"`},
		{name: "ts a string", payload: v2With("readings", rowsWith(4, `["1764100000523",21.5,40.2]`)), reason: ReasonBadField,
			detail: "readings[4] … ts must be an integer, got string"},
		{name: "ts null", payload: v2With("readings", rowsWith(0, "[null,21.5,40.2]")), reason: ReasonBadField,
			detail: "readings[0] … ts must be an integer, got null"},
		{name: "ts overflow", payload: v2With("readings", rowsWith(1, "[9223372036854775808,21.5,40.2]")), reason: ReasonBadField,
			detail: `readings[1] … ts "9223372036854775808" overflows int64`},
		{name: "value a string", payload: v2With("readings", rowsWith(1, `[1764100000223,"21.5",40.2]`)), reason: ReasonBadMetric,
			detail: "readings[1] (seq 18): metric \"temperature_c\" must be a number, got string"},
		{name: "value null", payload: v2With("readings", rowsWith(3, "[1764100000423,21.5,null]")), reason: ReasonBadMetric,
			detail: "readings[3] (seq 20): metric \"humidity_pct\" must be a number, got null"},
		{name: "value 1e999", payload: v2With("readings", rowsWith(1, "[1764100000223,1e999,40.2]")), reason: ReasonBadMetric,
			detail: `readings[1] (seq 18): metric "temperature_c" value "1e999" is out of float64 range`},
		{name: "value -1e999", payload: v2With("readings", rowsWith(5, "[1764100000623,21.5,-1e999]")), reason: ReasonBadMetric,
			detail: `readings[5] (seq 22): metric "humidity_pct" value "-1e999" is out of float64 range`},
		{name: "value true", payload: v2With("readings", rowsWith(1, "[1764100000223,true,40.2]")), reason: ReasonBadMetric,
			detail: "readings[1] (seq 18): metric \"temperature_c\" must be a number, got boolean"},
		{name: "value an array", payload: v2With("readings", rowsWith(1, "[1764100000223,[21.5],40.2]")), reason: ReasonBadMetric,
			detail: "readings[1] (seq 18): metric \"temperature_c\" must be a number, got array"},
		{name: "value nested too deep", payload: v2With("readings", rowsWith(1, "[1764100000223,[[[[[[1]]]]]],40.2]")), reason: ReasonBadJSON,
			detail: "nesting deeper than 8"},
		{name: "row with a trailing comma", payload: v2With("readings", "[[1764100000123,21.5,40.2,]]"), reason: ReasonBadJSON,
			detail: "unexpected ']'"},

		// metrics.
		{name: "metrics an object", payload: v2With("metrics", `{"temperature_c":0,"humidity_pct":1}`), reason: ReasonBadMetric,
			detail: "metrics must be an array of names, got object"},
		{name: "metrics a string", payload: v2With("metrics", `"temperature_c"`), reason: ReasonBadMetric,
			detail: "metrics must be an array of names, got string"},
		{name: "metrics empty", payload: v2With("metrics", "[]", "readings", "[[1764100000123]]"), reason: ReasonBadMetric,
			detail: "metrics is empty"},
		{name: "metrics 33", payload: v2With("metrics", names(33), "readings", "[[1764100000123"+strings.Repeat(",1", 33)+"]]"),
			reason: ReasonBadMetric, detail: "metrics has 33 names, max 32"},
		{name: "name upper case", payload: v2With("metrics", `["temperature_c","Humidity_pct"]`), reason: ReasonBadMetric,
			detail: `metric name "Humidity_pct" does not match ^[a-z][a-z0-9_]{0,62}$`},
		{name: "name empty", payload: v2With("metrics", `["","humidity_pct"]`), reason: ReasonBadMetric, detail: `metric name "" does not match`},
		{name: "name with a leading digit", payload: v2With("metrics", `["1temperature_c","humidity_pct"]`), reason: ReasonBadMetric,
			detail: `metric name "1temperature_c" does not match`},
		{name: "name too long", payload: v2With("metrics", `["temperature_c","`+strings.Repeat("h", 64)+`"]`), reason: ReasonBadMetric,
			detail: `metric name "` + strings.Repeat("h", 64) + `" does not match`},
		{name: "name with an escaped control", payload: v2With("metrics", `["temperature_c","hum\u0007"]`), reason: ReasonBadMetric,
			detail: `metric name "hum\x07" does not match`},
		{name: "name not ASCII", payload: v2With("metrics", `["temperature_c","humidit\u00e9"]`), reason: ReasonBadMetric,
			detail: `metric name "humidit\u00e9" does not match`},
		{name: "duplicate name", payload: v2With("metrics", `["temperature_c","temperature_c"]`), reason: ReasonBadMetric,
			detail: `duplicate metric "temperature_c"`},
		{name: "duplicate name escaped", payload: v2With("metrics", `["temperature_c","\u0074emperature_c"]`), reason: ReasonBadMetric,
			detail: `duplicate metric "temperature_c"`},
		{name: "duplicate name not adjacent", payload: v2With("metrics", `["a","b","c","b"]`, "readings", "[[1764100000123,1,2,3,4]]"),
			reason: ReasonBadMetric, detail: `duplicate metric "b"`},
		{name: "name a number", payload: v2With("metrics", `["temperature_c",1]`), reason: ReasonBadMetric,
			detail: "metrics[1] must be a name, got number"},
		{name: "name null", payload: v2With("metrics", `[null,"humidity_pct"]`), reason: ReasonBadMetric,
			detail: "metrics[0] must be a name, got null"},

		// Size.
		{name: "batch over 64 KiB", payload: pad(v2With(), MaxBatchBytes+1), reason: ReasonTooLarge,
			detail: "payload is 65537 bytes, max 65536"},
		{name: "v1 over 4 KiB", payload: pad(v1Example, MaxPayloadBytes+1), reason: ReasonTooLarge,
			detail: "payload is 4097 bytes, max 4096"},
		{name: "v1 of 20000 bytes", payload: pad(v1Example, 20000), reason: ReasonTooLarge,
			detail: "payload is 20000 bytes, max 4096"},
		{name: "v1 of 64 KiB", payload: pad(v1Example, MaxBatchBytes), reason: ReasonTooLarge,
			detail: "payload is 65536 bytes, max 4096"},
		{name: "v1 over 4 KiB with bad JSON", payload: pad(v1Example, 5000)[:4999], reason: ReasonTooLarge,
			detail: "payload is 4999 bytes, max 4096"},
		{name: "v1 over 4 KiB with a bad version", payload: pad(`{"v":"1"}`, 5000), reason: ReasonTooLarge,
			detail: "payload is 5000 bytes, max 4096"},
		// Over 4 KiB, a batch must start with the bytes {"v":2, to be parsed.
		{name: "batch over 4 KiB with a space", payload: pad(`{ "v":2,`+v2With()[len(`{"v":2,`):], 5000), reason: ReasonTooLarge,
			detail: "payload is 5000 bytes, max 4096"},
		{name: "batch over 4 KiB, v not first", payload: pad(v2With("v", "", "v", "2"), 5000), reason: ReasonTooLarge,
			detail: "payload is 5000 bytes, max 4096"},
		{name: "v1 over 4 KiB behind {\"v\":2,", payload: pad(`{"v":2,`+v1Example[len(`{"v":1,`):], 5000), reason: ReasonBadField,
			detail: `unknown field "ts"`},
		{name: "v1 over 4 KiB behind a second v", payload: pad(`{"v":2,`+v1Example[1:], 5000), reason: ReasonBadJSON,
			detail: `duplicate field "v"`},
		{name: "batch over 4 KiB with bad JSON", payload: pad(v2With(), 5000)[:4999], reason: ReasonBadJSON,
			detail: "unexpected end of payload at offset 4999"},

		// Time window: the first reading out of it is named.
		{name: "stale reading in the middle", payload: v2With("readings", rowsWith(3, fmt.Sprintf("[%d,21.5,40.2]", now-86_400_000-1))),
			reason: ReasonStale, detail: fmt.Sprintf("readings[3] (seq 20): ts %d is more than 24h0m0s before now (%d)", now-86_400_000-1, now)},
		{name: "future reading in the middle", payload: v2With("readings", rowsWith(3, fmt.Sprintf("[%d,21.5,40.2]", now+300_001))),
			reason: ReasonFuture, detail: fmt.Sprintf("readings[3] (seq 20): ts %d is more than 5m0s after now (%d)", now+300_001, now)},
		{name: "last reading stale", payload: v2With("readings", rowsWith(5, "[0,21.5,40.2]")), reason: ReasonStale,
			detail: "readings[5] (seq 22): ts 0 is more than"},
		{name: "first out of window named", payload: v2With("readings", rows(6, func(i int) string {
			switch i {
			case 2:
				return fmt.Sprintf("[%d,1,2]", now+300_001)
			case 4:
				return "[0,1,2]"
			}
			return row(i)
		})), reason: ReasonFuture, detail: "readings[2] (seq 19): ts"},

		// Order: what is reported when a batch has two faults.
		{name: "bad field before topic mismatch", payload: v2With("device", `"th-00043"`, "seq", "0"), reason: ReasonBadField,
			detail: "seq must be at least 1"},
		{name: "topic mismatch before bad metric", payload: v2With("device", `"th-00043"`, "metrics", "[]"), reason: ReasonTopicMismatch,
			detail: `device "th-00043" differs`, unmarshal: ReasonBadMetric},
		{name: "bad reading before a stale one", payload: v2With("readings", rows(3, func(i int) string {
			return []string{"[0,1,2]", row(1), "[1764100000323,1,null]"}[i]
		})), reason: ReasonBadMetric, detail: "readings[2] (seq 19): metric \"humidity_pct\" must be a number, got null"},
		{name: "first bad reading named", payload: v2With("readings", rows(3, func(i int) string {
			return []string{row(0), "[1764100000223,1]", `[1764100000323,1,"x"]`}[i]
		})), reason: ReasonBadMetric, detail: "readings[1] (seq 18): has 2 entries"},
	}
}

// TestDecodeV2Rejected: every hostile batch is rejected with its reason
// and a detail that says what was wrong, by Decode and, unless the fault
// is its topic or time window, by Unmarshal.
func TestDecodeV2Rejected(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range v2Rejected() {
		if seen[tt.name] {
			t.Errorf("two cases named %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Decode(testTopic, []byte(tt.payload), testNow, Limits{})
			rej := checkRejection(t, err, tt.reason)
			checkDetail(t, rej.Detail, tt.detail)

			_, err = Unmarshal([]byte(tt.payload))
			switch {
			case tt.unmarshal != "":
				checkRejection(t, err, tt.unmarshal)
			case structural[tt.reason]:
				urej := checkRejection(t, err, tt.reason)
				if urej.Detail != rej.Detail {
					t.Errorf("Unmarshal detail %q, Decode's %q", urej.Detail, rej.Detail)
				}
			case err != nil:
				t.Errorf("Unmarshal: %v, want success (no topic or window check)", err)
			}
		})
	}
}

// checkDetail asserts detail contains the parts of want, separated by
// " … ", in order.
func checkDetail(t *testing.T, detail, want string) {
	t.Helper()
	rest := detail
	for _, part := range strings.Split(want, " … ") {
		i := strings.Index(rest, part)
		if i < 0 {
			t.Errorf("detail %q does not contain %q (of %q)", detail, part, want)
			return
		}
		rest = rest[i+len(part):]
	}
}

type v2Accept struct {
	name    string
	payload string
	want    Batch
}

// batchOf is a decoded batch of th-00042, boot 1764100000, seqs from
// first, one reading per row: a ts and one value per name.
func batchOf(first uint64, names []string, rows ...[]float64) Batch {
	b := Batch{Version: Version2, Device: "th-00042", Boot: 1764100000}
	for i, row := range rows {
		r := Reading{Version: Version2, Device: b.Device, Boot: b.Boot, Seq: first + uint64(i), TS: int64(row[0])}
		for j, name := range names {
			r.Metrics = append(r.Metrics, Metric{name, row[j+1]})
		}
		b.Readings = append(b.Readings, r)
	}
	return b
}

// v2Accepted are valid batches and what they decode to.
func v2Accepted() []v2Accept {
	th := []string{"temperature_c", "humidity_pct"}
	example := batchOf(17, th, []float64{1764100000123, 21.5, 40.2}, []float64{1764100001123, 21.6, 40.1})
	with := func(b Batch, edit func(*Batch)) Batch { edit(&b); return b }

	// 500 readings, the most a batch holds, each with distinct values.
	var many []string
	var manyRows [][]float64
	for i := range MaxBatchReadings {
		many = append(many, fmt.Sprintf("[%d,%d.5,-%d,1e-3]", 1764100000000+int64(i)*100, i, i))
		manyRows = append(manyRows, []float64{1764100000000 + float64(i)*100, float64(i) + 0.5, -float64(i), 0.001})
	}
	// 500 readings of 32 metrics, padded to exactly MaxBatchBytes.
	widest := v2With("metrics", names(MaxMetrics), "readings", rows(MaxBatchReadings, func(i int) string {
		return fmt.Sprintf("[%d%s]", 1764100000000+int64(i), strings.Repeat(",7", MaxMetrics))
	}))
	var widestNames []string
	var widestRows [][]float64
	for i := range MaxMetrics {
		widestNames = append(widestNames, "m"+strconv.Itoa(i))
	}
	for i := range MaxBatchReadings {
		r := []float64{1764100000000 + float64(i)}
		for range MaxMetrics {
			r = append(r, 7)
		}
		widestRows = append(widestRows, r)
	}

	return []v2Accept{
		{"example", v2With(), example},
		{"one reading", v2With("seq", "1", "metrics", `["x"]`, "readings", "[[1764100000123,0]]"),
			batchOf(1, []string{"x"}, []float64{1764100000123, 0})},
		{"500 readings", v2With("metrics", `["a","b","c"]`, "readings", "["+strings.Join(many, ",")+"]"),
			batchOf(17, []string{"a", "b", "c"}, manyRows...)},
		{"500 readings of 32 metrics in 64 KiB", pad(widest, MaxBatchBytes), batchOf(17, widestNames, widestRows...)},
		{"escaped device and names", v2With("device", `"th-\u00300042"`, "metrics", `["\u0074emperature_c","hum\u0069dity_pct"]`), example},
		{"whitespace", " \t\r\n{ \"v\" :\t2 ,\n\"device\"\r:\"th-00042\", \"boot\": 1764100000 , \"seq\" : 17,\n" +
			"\"metrics\" : [ \"temperature_c\" ,\t\"humidity_pct\" ] ,\n\"readings\" : [\n\t[ 1764100000123 , 21.5 , 40.2 ] ,\n" +
			"\t[1764100001123,21.6,40.1]\n]\n}\r\n", example},
		{"4 KiB, v not first", pad(`{"readings":[[1764100000123,21.5,40.2],[1764100001123,21.6,40.1]],"metrics":["temperature_c","humidity_pct"],`+
			`"seq":17,"boot":1764100000,"device":"th-00042","v":2}`, MaxPayloadBytes), example},
		{"any member order", `{"readings":[[1764100000123,21.5,40.2],[1764100001123,21.6,40.1]],"metrics":["temperature_c","humidity_pct"],` +
			`"seq":17,"boot":1764100000,"device":"th-00042","v":2}`, example},
		{"awkward numbers", v2With("metrics", `["a","b","c","d","e","f","g","h","i","j","k"]`, "readings",
			"[[1764100000123,-0,-0.0,1e-300,1.7976931348623157e308,-1.7976931348623157e308,5e-324,1E5,2.5e+3,0.1e1,-273.15,1e-400]]"),
			batchOf(17, strings.Split("a b c d e f g h i j k", " "), []float64{1764100000123, math.Copysign(0, -1), math.Copysign(0, -1),
				1e-300, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1e5, 2500, 1, -273.15, 0})},
		{"a long value", v2With("seq", "1", "metrics", `["x"]`, "readings", "[[1764100000123,3.14159265358979323846264338327950288]]"),
			batchOf(1, []string{"x"}, []float64{1764100000123, math.Pi})},
		{"last seq", v2With("seq", "18446744073709551615", "readings", "[[1764100000123,1,2]]"),
			batchOf(math.MaxUint64, th, []float64{1764100000123, 1, 2})},
		{"500 readings to the last seq", v2With("seq", "18446744073709551116", "metrics", `["a","b","c"]`,
			"readings", "["+strings.Join(many, ",")+"]"),
			batchOf(math.MaxUint64-MaxBatchReadings+1, []string{"a", "b", "c"}, manyRows...)},
		{"boot 0", v2With("boot", "0"), with(example, func(b *Batch) { setBoot(b, 0) })},
		{"boot max", v2With("boot", "18446744073709551615"), with(example, func(b *Batch) { setBoot(b, math.MaxUint64) })},
	}
}

// setBoot sets the boot of b and of its readings, which it copies first.
func setBoot(b *Batch, boot uint64) {
	b.Boot, b.Readings = boot, append([]Reading(nil), b.Readings...)
	for i := range b.Readings {
		b.Readings[i].Boot = boot
	}
}

func TestDecodeV2Accepted(t *testing.T) {
	for _, tt := range v2Accepted() {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.payload) > MaxBatchBytes {
				t.Fatalf("payload has %d bytes, max %d", len(tt.payload), MaxBatchBytes)
			}
			topic, got, err := Decode(testTopic, []byte(tt.payload), testNow, Limits{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if topic.Device != "th-00042" {
				t.Errorf("topic = %+v", topic)
			}
			checkBatch(t, got)
			if !sameBatch(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			if u, err := Unmarshal([]byte(tt.payload)); err != nil || !sameBatch(u, tt.want) {
				t.Errorf("Unmarshal = %+v, %v; want %+v", u, err, tt.want)
			}
		})
	}
}

// TestDecodeV2WindowReturnsBatch: a batch rejected for a reading's ts
// comes back whole with its topic, for the dead letter's labels.
func TestDecodeV2WindowReturnsBatch(t *testing.T) {
	payload := v2With("readings", rowsWith(3, "[1,21.5,40.2]"))
	topic, b, err := Decode(testTopic, []byte(payload), testNow, Limits{})
	checkRejection(t, err, ReasonStale)
	if topic.Device != "th-00042" || len(b.Readings) != 6 || b.ID() != "th-00042:1764100000:17-22" || b.Readings[3].TS != 1 {
		t.Errorf("topic %+v, batch %+v; want both filled in, readings[3].TS 1", topic, b)
	}
	// A window that holds ts 1 takes the same batch.
	lim := Limits{MaxAge: time.Duration(testNow.UnixMilli()) * time.Millisecond}
	if _, ok, err := Decode(testTopic, []byte(payload), testNow, lim); err != nil || !sameBatch(ok, b) {
		t.Errorf("with %+v: %+v, %v; want %+v", lim, ok, err, b)
	}
}

// TestDecodeV2Independent: a decoded batch shares no memory with another
// batch, with its payload or, through a reading's metrics, with the
// reading after it.
func TestDecodeV2Independent(t *testing.T) {
	payload := []byte(v2With())
	a, err := Unmarshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	want := batchOf(17, []string{"temperature_c", "humidity_pct"},
		[]float64{1764100000123, 21.5, 40.2}, []float64{1764100001123, 21.6, 40.1})
	a.Readings[0].Metrics = append(a.Readings[0].Metrics, Metric{"x", 1})
	if !sameReading(a.Readings[1], want.Readings[1]) {
		t.Errorf("appending to readings[0]'s metrics changed readings[1]: %+v", a.Readings[1])
	}
	clear(payload)
	if _, err := Unmarshal([]byte(v2With("device", `"zz-99999"`, "metrics", `["aaaaaaaaaaaaa","bbbbbbbbbbbb"]`))); err != nil {
		t.Fatal(err)
	}
	a.Readings[0].Metrics = a.Readings[0].Metrics[:2]
	if !sameBatch(a, want) {
		t.Errorf("after its payload was cleared and another decoded: %+v, want %+v", a, want)
	}
}
