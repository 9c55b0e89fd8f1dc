package ingest

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// FuzzPrepare checks what ingest makes of any topic and payload: never a
// panic; a reading goes to telemetry.us-east.> with its identity as message
// id and the original bytes; anything else to deadletter.us-east.<reason>
// with the original bytes and printable, bounded headers.
func FuzzPrepare(f *testing.F) {
	now := time.UnixMilli(1764100060000)
	f.Add("telemetry/us-east/thermo/th-1", []byte(`{"v":1,"device":"th-1","boot":1,"seq":1,"ts":1764100060000,"metrics":{"t":1}}`))
	f.Add("telemetry/us-east/thermo/th-1", []byte(`{"v":1,`))
	f.Add("telemetry/us-east/thermo/\x00\xff", []byte(strings.Repeat("[", 5000)))
	in := &Ingest{cfg: Config{Region: "us-east"}, log: slog.New(slog.DiscardHandler), metrics: newMetrics("us-east", "")}
	in.cfg.setDefaults()
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		j := in.prepare(topic, payload, now)
		if string(j.msg.Data) != string(payload) {
			t.Fatalf("body is not the original payload")
		}
		if j.reason == "" {
			if !strings.HasPrefix(j.msg.Subject, "telemetry.us-east.") || j.msg.Header.Get(jetstream.MsgIDHeader) == "" {
				t.Fatalf("reading to %q with id %q", j.msg.Subject, j.msg.Header.Get(jetstream.MsgIDHeader))
			}
			return
		}
		if j.msg.Subject != "deadletter.us-east."+string(j.reason) {
			t.Fatalf("dead letter to %q, reason %q", j.msg.Subject, j.reason)
		}
		for _, h := range []string{protocol.HeaderReason, protocol.HeaderTopic, protocol.HeaderDetail} {
			v := j.msg.Header.Get(h)
			if len(v) > 300 || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("header %s unsafe: %q", h, v)
			}
		}
		if j.reason != ReasonInternal && !isProtocolReason(j.reason) {
			t.Fatalf("unknown reason %q", j.reason)
		}
	})
}

func isProtocolReason(r protocol.Reason) bool {
	for _, p := range protocol.Reasons {
		if p == r {
			return true
		}
	}
	return false
}

// BenchmarkPrepare measures what ingest does with a valid reading before
// publishing it: decoding, validation, subject and headers.
func BenchmarkPrepare(b *testing.B) {
	now := time.UnixMilli(1764100060000)
	topic := "telemetry/us-east/thermo/th-00042"
	payload := []byte(`{"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100060000,"metrics":{"temperature_c":21.5,"humidity_pct":40.2,"battery_pct":97.1}}`)
	in := &Ingest{cfg: Config{Region: "us-east"}, log: slog.New(slog.DiscardHandler), metrics: newMetrics("us-east", "")}
	in.cfg.setDefaults()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		j := in.prepare(topic, payload, now)
		if j.reason != "" {
			b.Fatal(j.detail)
		}
		j.release() // as the acker does
	}
}
