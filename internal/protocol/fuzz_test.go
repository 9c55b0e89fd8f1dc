package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks that Decode never panics, rejects only with a known
// reason, agrees with encoding/json on what is valid JSON and, for what it
// decodes, on every value of every reading, v1 or v2 (the differential
// check of scan.go and number.go against the standard library), that
// Unmarshal reads the same batch, and that whatever it decodes survives a
// round trip through AppendEncode or AppendEncodeBatch.
func FuzzDecode(f *testing.F) {
	for _, g := range loadGolden(f) {
		f.Add(testTopic, g.payload)
	}
	for _, p := range v2Seeds() {
		f.Add(testTopic, p)
	}
	f.Add("telemetry/us-east/thermo/th-00043", []byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		_, b, err := Decode(topic, payload, testNow, Limits{})
		accepted := err == nil
		if err != nil {
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("error %v is a %T, want *Rejection", err, err)
			}
			if !slices.Contains(Reasons, rej.Reason) {
				t.Fatalf("unknown reason %q", rej.Reason)
			}
			if rej.Detail == "" || len(rej.Detail) > 300 {
				t.Fatalf("detail has %d bytes: %q", len(rej.Detail), rej.Detail)
			}
			if i := strings.IndexFunc(rej.Detail, func(r rune) bool { return r < 0x20 || r >= 0x7f }); i >= 0 {
				t.Fatalf("detail has byte 0x%02x, not safe in a header: %q", rej.Detail[i], rej.Detail)
			}
			if (rej.Reason == ReasonTooLarge) == parsed(payload) {
				t.Fatalf("reason %s (%s) for %d bytes starting %.8q", rej.Reason, rej.Detail, len(payload), payload)
			}
			if parsed(payload) && rej.Reason != ReasonBadTopic {
				if want := refBadJSON(payload); (rej.Reason == ReasonBadJSON) != want {
					t.Fatalf("reason %s (%s), but reference says bad JSON = %v", rej.Reason, rej.Detail, want)
				}
			}
			if rej.Reason != ReasonStale && rej.Reason != ReasonFuture {
				return
			}
		}
		// Accepted, or rejected for its time window only: b is decoded.
		checkBatch(t, b)
		if refBadJSON(payload) {
			t.Fatalf("decoded, but the reference says it is bad JSON")
		}
		if want, err := refValues(payload); err != nil {
			t.Fatalf("decoded %+v, but the reference cannot read it: %v", b, err)
		} else if got := valuesOf(b); !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded %+v, encoding/json reads %+v", got, want)
		}
		if u, err := Unmarshal(payload); err != nil || !sameBatch(u, b) {
			t.Fatalf("Unmarshal = %+v, %v; Decode read %+v", u, err, b)
		}

		enc, limit := AppendEncode(nil, b.Readings[0]), MaxPayloadBytes
		if b.Version == Version2 {
			enc, limit = AppendEncodeBatch(nil, b.Readings), MaxBatchBytes
		}
		b2, err := Unmarshal(enc)
		if len(enc) > limit {
			// Shortest floats are not always the shortest text: "1e5" is
			// written 100000, so a payload near the limit may not fit again.
			checkRejection(t, err, ReasonTooLarge)
			return
		}
		if err != nil {
			t.Fatalf("re-encoded %s: %v", enc, err)
		}
		if !sameBatch(b, b2) {
			t.Fatalf("round trip changed the batch:\n got %+v\nwant %+v", b2, b)
		}
		if accepted {
			if _, b3, err := Decode(topic, enc, testNow, Limits{}); err != nil || !sameBatch(b, b3) {
				t.Fatalf("re-decoding %s: %+v, %v", enc, b3, err)
			}
		}
	})
}

// parsed reports whether Decode gets to parse payload after its topic:
// payloads over MaxPayloadBytes are too_large unless they start as a
// batch must.
func parsed(payload []byte) bool {
	return len(payload) <= MaxPayloadBytes ||
		len(payload) <= MaxBatchBytes && bytes.HasPrefix(payload, []byte(`{"v":2,`))
}

// v2Seeds are batches for FuzzDecode to start from: those of
// TestDecodeV2Accepted and TestDecodeV2Rejected up to 8 KiB.
func v2Seeds() [][]byte {
	var seeds [][]byte
	for _, c := range v2Accepted() {
		if len(c.payload) <= 8<<10 {
			seeds = append(seeds, []byte(c.payload))
		}
	}
	for _, c := range v2Rejected() {
		if len(c.payload) <= 8<<10 {
			seeds = append(seeds, []byte(c.payload))
		}
	}
	return seeds
}

// values are a batch's fields in one form for both decoders, each value
// as its float64 bits, so that -0 and 0 differ.
type values struct {
	V        int
	Device   string
	Boot     uint64
	Readings []readingValues
}

type readingValues struct {
	Seq, TS uint64 // TS as two's complement, from int64
	Metrics []namedBits
}

type namedBits struct {
	Name string
	Bits uint64
}

// v1Wire and v2Wire are the wire forms as encoding/json reads them.
type v1Wire struct {
	V       int                `json:"v"`
	Device  string             `json:"device"`
	Boot    uint64             `json:"boot"`
	Seq     uint64             `json:"seq"`
	TS      int64              `json:"ts"`
	Metrics map[string]float64 `json:"metrics"`
}

type v2Wire struct {
	V       int      `json:"v"`
	Device  string   `json:"device"`
	Boot    uint64   `json:"boot"`
	Seq     uint64   `json:"seq"`
	Metrics []string `json:"metrics"`
	// Readings holds each row as encoding/json reads it into float64, the
	// type of Metric.Value; ts, an int64, is read from v2TS.
	Readings [][]float64 `json:"readings"`
}

// v2TS reads the rows again, as numbers kept as text, for ts: float64
// cannot hold every int64.
type v2TS struct {
	Readings [][]json.Number `json:"readings"`
}

// refValues is the reference decoder of a decoded payload: what
// encoding/json (and strconv's integer and float parsers) read from the
// same bytes. The hand-written scanner and number parser must agree with
// it exactly. v1 metrics are in name order: encoding/json reads them into
// a map.
func refValues(p []byte) (values, error) {
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(p, &v); err != nil {
		return values{}, err
	}
	switch v.V {
	case Version1:
		var w v1Wire
		if err := json.Unmarshal(p, &w); err != nil {
			return values{}, err
		}
		r := readingValues{Seq: w.Seq, TS: uint64(w.TS)}
		for name, x := range w.Metrics {
			r.Metrics = append(r.Metrics, namedBits{name, math.Float64bits(x)})
		}
		sort.Slice(r.Metrics, func(i, j int) bool { return r.Metrics[i].Name < r.Metrics[j].Name })
		return values{V: w.V, Device: w.Device, Boot: w.Boot, Readings: []readingValues{r}}, nil
	case Version2:
		var w v2Wire
		if err := json.Unmarshal(p, &w); err != nil {
			return values{}, err
		}
		var ts v2TS
		if err := json.Unmarshal(p, &ts); err != nil {
			return values{}, err
		}
		out := values{V: w.V, Device: w.Device, Boot: w.Boot}
		for k, row := range w.Readings {
			if len(row) != len(w.Metrics)+1 || len(ts.Readings[k]) != len(row) {
				return values{}, fmt.Errorf("readings[%d] has %d entries for %d metrics", k, len(row), len(w.Metrics))
			}
			t, err := strconv.ParseInt(ts.Readings[k][0].String(), 10, 64)
			if err != nil {
				return values{}, fmt.Errorf("readings[%d] ts: %w", k, err)
			}
			r := readingValues{Seq: w.Seq + uint64(k), TS: uint64(t)}
			for j, name := range w.Metrics {
				r.Metrics = append(r.Metrics, namedBits{name, math.Float64bits(row[j+1])})
			}
			out.Readings = append(out.Readings, r)
		}
		return out, nil
	}
	return values{}, fmt.Errorf("version %d", v.V)
}

// valuesOf is b in the form refValues returns.
func valuesOf(b Batch) values {
	v := values{V: b.Version, Device: b.Device, Boot: b.Boot}
	for _, r := range b.Readings {
		rv := readingValues{Seq: r.Seq, TS: uint64(r.TS)}
		for _, m := range r.Metrics {
			rv.Metrics = append(rv.Metrics, namedBits{m.Name, math.Float64bits(m.Value)})
		}
		if b.Version == Version1 {
			sort.Slice(rv.Metrics, func(i, j int) bool { return rv.Metrics[i].Name < rv.Metrics[j].Name })
		}
		v.Readings = append(v.Readings, rv)
	}
	return v
}

// refBadJSON is a slow reference for what Decode calls bad_json: not UTF-8,
// not JSON, not an object, nested deeper than maxDepth, or a duplicate name
// in the top-level object.
func refBadJSON(p []byte) bool {
	if !utf8.Valid(p) || !json.Valid(p) {
		return true
	}
	if b := bytes.TrimLeft(p, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	type frame struct {
		object, wantKey bool
	}
	var stack []frame
	names := map[string]bool{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			return true
		}
		isKey := len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].wantKey
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantKey = !stack[len(stack)-1].wantKey
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			stack = append(stack, frame{object: tok == json.Delim('{'), wantKey: true})
			if len(stack) > maxDepth {
				return true
			}
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true // the closed container was a value
			}
		default:
			if isKey && len(stack) == 1 {
				k := tok.(string)
				if names[k] {
					return true
				}
				names[k] = true
			}
		}
	}
}
