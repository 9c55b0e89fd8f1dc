package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks that Decode never panics, rejects only with a known
// reason, agrees with encoding/json on what is valid JSON and, for what it
// accepts, on every value (the differential check of scan.go and
// number.go against the standard library), and that whatever it accepts
// survives a round trip through AppendEncode.
func FuzzDecode(f *testing.F) {
	for _, g := range loadGolden(f) {
		f.Add(testTopic, g.payload)
	}
	f.Add("telemetry/us-east/thermo/th-00043", []byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		_, r, err := Decode(topic, payload, testNow, Limits{})
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
			if len(payload) <= MaxPayloadBytes && rej.Reason != ReasonBadTopic {
				if want := refBadJSON(payload); (rej.Reason == ReasonBadJSON) != want {
					t.Fatalf("reason %s (%s), but reference says bad JSON = %v", rej.Reason, rej.Detail, want)
				}
			}
			if rej.Reason != ReasonStale && rej.Reason != ReasonFuture {
				return
			}
		} else if refBadJSON(payload) {
			t.Fatalf("accepted, but the reference says it is bad JSON")
		} else if want, err := refValues(payload); err != nil {
			t.Fatalf("accepted, but encoding/json cannot read it: %v", err)
		} else if got := valuesOf(r); !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded %+v, encoding/json reads %+v", got, want)
		}
		b := AppendEncode(nil, r)
		r2, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("re-encoded %s: %v", b, err)
		}
		if !sameReading(r, r2) {
			t.Fatalf("round trip changed the reading:\n got %+v\nwant %+v", r2, r)
		}
		if accepted {
			if _, r3, err := Decode(topic, b, testNow, Limits{}); err != nil || !sameReading(r, r3) {
				t.Fatalf("re-decoding %s: %+v, %v", b, r3, err)
			}
		}
	})
}

// values are a reading's fields as encoding/json reads them.
type values struct {
	V       int                `json:"v"`
	Device  string             `json:"device"`
	Boot    uint64             `json:"boot"`
	Seq     uint64             `json:"seq"`
	TS      int64              `json:"ts"`
	Metrics map[string]float64 `json:"metrics"`
}

// refValues is the reference decoder of an accepted payload: what
// encoding/json (and strconv's float parser) read from the same bytes.
// The hand-written scanner and number parser must agree with it exactly.
func refValues(p []byte) (values, error) {
	var v values
	err := json.Unmarshal(p, &v)
	return v, err
}

func valuesOf(r Reading) values {
	v := values{V: r.Version, Device: r.Device, Boot: r.Boot, Seq: r.Seq, TS: r.TS, Metrics: map[string]float64{}}
	for _, m := range r.Metrics {
		v.Metrics[m.Name] = m.Value
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
