package ingest

import (
	"errors"
	"testing"

	"encoding/json"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParsePubAck covers the answers JetStream gives to a publish, as the
// server writes them (note the space in "duplicate": true).
func TestParsePubAck(t *testing.T) {
	cases := []struct {
		name    string
		data    string
		dup     bool
		errCode int // 0: no API error
		invalid bool
	}{
		{name: "stored", data: `{"stream":"READINGS","domain":"us-east","seq":17}`},
		{name: "stored without domain", data: `{"stream":"READINGS","seq":17}`},
		{name: "duplicate", data: `{"stream":"READINGS","domain":"us-east","seq":17,"duplicate": true}`, dup: true},
		{name: "duplicate, json encoding", data: `{"stream":"READINGS","seq":17,"duplicate":true}`, dup: true},
		{name: "duplicate false", data: `{"stream":"READINGS","seq":17,"duplicate":false}`},
		{name: "too large", data: `{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"},"stream":"READINGS","seq":0}`, errCode: 400},
		{name: "stream full", data: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, errCode: 503},
		{name: "empty", data: ``, invalid: true},
		{name: "no stream", data: `{"stream":"","seq":1}`, invalid: true},
		{name: "not an ack", data: `hello`, invalid: true},
		{name: "broken error", data: `{"error":`, invalid: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dup, err := parsePubAck([]byte(c.data))
			var apiErr *jetstream.APIError
			switch {
			case c.invalid:
				if !errors.Is(err, jetstream.ErrInvalidJSAck) {
					t.Fatalf("err = %v, want ErrInvalidJSAck", err)
				}
			case c.errCode != 0:
				if !errors.As(err, &apiErr) || apiErr.Code != c.errCode || apiErr.Description == "" {
					t.Fatalf("err = %v, want API error %d", err, c.errCode)
				}
				if Permanent(err) != (c.errCode < 500) {
					t.Fatalf("Permanent(%v) = %v", err, Permanent(err))
				}
			case err != nil || dup != c.dup:
				t.Fatalf("got duplicate=%v err=%v, want duplicate=%v", dup, err, c.dup)
			}
		})
	}
}

// FuzzParsePubAck: never a panic, and never an acknowledgement without a
// stream name.
func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"READINGS","domain":"us-east","seq":17,"duplicate": true}`))
	f.Add([]byte(`{"error":{"code":503,"err_code":10077,"description":"x"}}`))
	f.Add([]byte(`{"stream":"x`))
	f.Add([]byte(`{"stream":"READINGS","seq":1,"duplicate":false}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dup, err := parsePubAck(data)
		if err != nil {
			return
		}
		// What it accepts, encoding/json reads as an acknowledgement of a
		// named stream, duplicate or not alike.
		var ack struct {
			Stream    string `json:"stream"`
			Duplicate bool   `json:"duplicate"`
		}
		if jerr := json.Unmarshal(data, &ack); jerr != nil || ack.Stream == "" {
			t.Fatalf("accepted %q as an acknowledgement; encoding/json: %v, stream %q", data, jerr, ack.Stream)
		}
		if dup != ack.Duplicate {
			t.Fatalf("%q: duplicate %v, encoding/json says %v", data, dup, ack.Duplicate)
		}
	})
}

// BenchmarkParsePubAck is the cost per reading of reading JetStream's
// acknowledgement: json.Valid over the whole answer, then the hand parse.
func BenchmarkParsePubAck(b *testing.B) {
	ack := []byte(`{"stream":"READINGS","domain":"us-east","seq":1234567}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parsePubAck(ack); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePubAckEncodingJSON is the same acknowledgement read by
// encoding/json into nats.go's jetstream.PubAck, as nats.go's own publish
// path does: the library's cost of that hop, beside BenchmarkParsePubAck.
func BenchmarkParsePubAckEncodingJSON(b *testing.B) {
	ack := []byte(`{"stream":"READINGS","domain":"us-east","seq":1234567}`)
	b.ReportAllocs()
	for b.Loop() {
		var a jetstream.PubAck
		if err := json.Unmarshal(ack, &a); err != nil || a.Stream == "" {
			b.Fatal(err)
		}
	}
}
