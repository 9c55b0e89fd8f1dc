package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

func benchReading(metrics int) Reading {
	r := Reading{Version: 1, Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123}
	base := []Metric{{"temperature_c", 21.5}, {"humidity_pct", 40.2}, {"battery_pct", 97.1}}
	for i := range metrics {
		m := base[i%len(base)]
		if i >= len(base) {
			m.Name += "_" + strconv.Itoa(i)
			m.Value += float64(i) / 7
		}
		r.Metrics = append(r.Metrics, m)
	}
	return r
}

func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{3, 32} {
		b.Run(strconv.Itoa(n)+"-metrics", func(b *testing.B) {
			payload := AppendEncode(nil, benchReading(n))
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(testTopic, payload, testNow, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchBatch returns n readings of one device and boot, a second apart,
// with values that move by tenths as a sensor's do.
func benchBatch(n, metrics int) []Reading {
	readings := make([]Reading, n)
	for i := range readings {
		r := benchReading(metrics)
		r.Version, r.Seq, r.TS = Version2, r.Seq+uint64(i), r.TS+int64(i)*1000
		for j := range r.Metrics {
			r.Metrics[j].Value = math.Round(r.Metrics[j].Value*10+float64((i*7+j*3)%11-5)) / 10
		}
		readings[i] = r
	}
	return readings
}

// BenchmarkUnmarshal and BenchmarkUnmarshalV2 compare the cost of a
// reading sent alone (v1) and in a batch of 100 (v2), per reading and in
// payload bytes per reading.
func BenchmarkUnmarshal(b *testing.B) {
	payload := AppendEncode(nil, benchReading(3))
	benchUnmarshal(b, payload, 1)
}

func BenchmarkUnmarshalV2(b *testing.B) {
	payload := AppendEncodeBatch(nil, benchBatch(100, 3))
	benchUnmarshal(b, payload, 100)
}

func benchUnmarshal(b *testing.B, payload []byte, readings int) {
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if batch, err := Unmarshal(payload); err != nil || len(batch.Readings) != readings {
			b.Fatalf("%d readings, %v; want %d", len(batch.Readings), err, readings)
		}
	}
	// After b.Loop, b.N is the number of iterations it ran.
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readings), "ns/reading")
	b.ReportMetric(float64(len(payload))/float64(readings), "B/reading")
}

// BenchmarkDecodeRejected measures a hostile payload, rejected late.
func BenchmarkDecodeRejected(b *testing.B) {
	payload := []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1764100000123,"metrics":{"x":"NaN"}}`)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(testTopic, payload, testNow, Limits{}); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkAppendEncode(b *testing.B) {
	for _, n := range []int{3, 32} {
		b.Run(strconv.Itoa(n)+"-metrics", func(b *testing.B) {
			r := benchReading(n)
			buf := AppendEncode(nil, r)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendEncode(buf[:0], r)
			}
		})
	}
}

// hostilePayloads are near MaxPayloadBytes (v1) or MaxBatchBytes (batch-*)
// and built to cost the decoder as much as possible before they are
// rejected.
func hostilePayloads() map[string][]byte {
	// list joins items from item(0) up while the whole stays within max bytes.
	list := func(prefix, suffix string, max int, item func(i int) string) []byte {
		var b strings.Builder
		b.WriteString(prefix + item(0))
		for i := 1; ; i++ {
			next := "," + item(i)
			if b.Len()+len(next)+len(suffix) > max {
				b.WriteString(suffix)
				return []byte(b.String())
			}
			b.WriteString(next)
		}
	}
	object := func(member func(i int) string) []byte { return list("{", "}", MaxPayloadBytes, member) }
	const batch = `{"v":2,"device":"th-00042","boot":1,"seq":1,`
	zero := func(int) string { return "0" }
	// widest is the largest batch, 500 readings of 32 values, all of it
	// decoded before its last reading, [ts, values..., last], is rejected
	// for what ts or last holds.
	values := strings.Repeat(",2.5", 20) + strings.Repeat(",1", MaxMetrics-21)
	widest := func(ts int64, last string) []byte {
		var b strings.Builder
		b.WriteString(batch + `"metrics":[`)
		for j := range MaxMetrics {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"m%d"`, j)
		}
		b.WriteString(`],"readings":[`)
		for range MaxBatchReadings - 1 {
			fmt.Fprintf(&b, "[%d%s,1],", testNow.UnixMilli(), values)
		}
		fmt.Fprintf(&b, "[%d%s,%s]]}", ts, values, last)
		return []byte(b.String())
	}
	return map[string][]byte{
		"batch-many-fields":    list(`{"v":2,`, "}", MaxBatchBytes, func(i int) string { return fmt.Sprintf(`"k%d":0`, i) }),
		"batch-long-readings":  list(batch+`"metrics":["x"],"readings":[`, "]}", MaxBatchBytes, zero),
		"batch-long-row":       list(batch+`"metrics":["x"],"readings":[[`, "]]}", MaxBatchBytes, zero),
		"batch-many-names":     list(batch+`"readings":[[0]],"metrics":[`, "]}", MaxBatchBytes, func(i int) string { return fmt.Sprintf(`"m%d"`, i) }),
		"batch-late-bad-value": widest(testNow.UnixMilli(), "1e999"),
		"batch-late-stale":     widest(1, "1"),
		"many-fields":          object(func(i int) string { return fmt.Sprintf(`"k%d":0`, i) }),
		"many-escaped-fields":  object(func(i int) string { return fmt.Sprintf(`"\u006b%d":0`, i) }),
		"long-array":           []byte(`{"v":1,"x":[` + strings.Repeat("0,", 2000) + "0]}"),
		"escaped-string":       []byte(`{"v":1,"x":"` + strings.Repeat(`\u00e9`, 670) + `"}`),
		"nested-metrics": []byte(`{"v":1,"device":"th-00042","boot":1,"seq":1,"ts":1764100000123,"metrics":{` +
			strings.Repeat(`"a":[[[[[0]]]]],`, 250) + `"b":0}}`),
	}
}

func BenchmarkDecodeHostile(b *testing.B) {
	for name, payload := range hostilePayloads() {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(testTopic, payload, testNow, Limits{}); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}

// BenchmarkUnmarshalEncodingJSON is the library's cost of the same hop:
// encoding/json reading the payload of BenchmarkUnmarshal into the
// reading's fields, unknown fields refused, and nothing else of what
// Unmarshal checks (duplicate names, depth, metric names, finite values).
// BenchmarkUnmarshalV2EncodingJSON does the same for BenchmarkUnmarshalV2's
// batch. Run all in one run:
//
//	go test -run '^$' -bench 'Unmarshal' -count 10 ./internal/protocol/
func BenchmarkUnmarshalEncodingJSON(b *testing.B) {
	payload := AppendEncode(nil, benchReading(3))
	benchEncodingJSON(b, payload, 1, func() any { return new(v1Wire) })
}

func BenchmarkUnmarshalV2EncodingJSON(b *testing.B) {
	payload := AppendEncodeBatch(nil, benchBatch(100, 3))
	benchEncodingJSON(b, payload, 100, func() any { return new(v2Wire) })
}

func benchEncodingJSON(b *testing.B, payload []byte, readings int, v func() any) {
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		d := json.NewDecoder(bytes.NewReader(payload))
		d.DisallowUnknownFields()
		if err := d.Decode(v()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readings), "ns/reading")
	b.ReportMetric(float64(len(payload))/float64(readings), "B/reading")
}
