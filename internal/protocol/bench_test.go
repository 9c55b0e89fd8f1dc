package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
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

func BenchmarkUnmarshal(b *testing.B) {
	payload := AppendEncode(nil, benchReading(3))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(payload); err != nil {
			b.Fatal(err)
		}
	}
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

// hostilePayloads are near MaxPayloadBytes and built to cost the decoder as
// much as possible before they are rejected.
func hostilePayloads() map[string][]byte {
	object := func(member func(i int) string) []byte {
		s := "{" + member(0)
		for i := 1; ; i++ {
			next := s + "," + member(i)
			if len(next)+1 > MaxPayloadBytes {
				return []byte(s + "}")
			}
			s = next
		}
	}
	return map[string][]byte{
		"many-fields":         object(func(i int) string { return fmt.Sprintf(`"k%d":0`, i) }),
		"many-escaped-fields": object(func(i int) string { return fmt.Sprintf(`"\u006b%d":0`, i) }),
		"long-array":          []byte(`{"v":1,"x":[` + strings.Repeat("0,", 2000) + "0]}"),
		"escaped-string":      []byte(`{"v":1,"x":"` + strings.Repeat(`\u00e9`, 670) + `"}`),
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
// Run both in one run:
//
//	go test -run '^$' -bench 'Unmarshal' -count 10 ./internal/protocol/
func BenchmarkUnmarshalEncodingJSON(b *testing.B) {
	payload := AppendEncode(nil, benchReading(3))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var v values
		d := json.NewDecoder(bytes.NewReader(payload))
		d.DisallowUnknownFields()
		if err := d.Decode(&v); err != nil {
			b.Fatal(err)
		}
	}
}
