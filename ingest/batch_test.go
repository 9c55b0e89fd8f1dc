package ingest_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// batchOf is a v2 batch of device's readings first..first+n-1, measured a
// millisecond apart from ts.
func batchOf(device string, first uint64, n int, ts time.Time) []protocol.Reading {
	rs := make([]protocol.Reading, n)
	for i := range rs {
		rs[i] = protocol.Reading{Version: protocol.Version2, Device: device, Boot: 1764100000, Seq: first + uint64(i),
			TS:      ts.UnixMilli() + int64(i),
			Metrics: []protocol.Metric{{Name: "temperature_c", Value: 20 + float64(i)/10}, {Name: "humidity_pct", Value: 40}}}
	}
	return rs
}

// A v2 batch is one JetStream message, stored as it came under the id
// device:boot:first-last; sent again it collapses; one bad reading
// dead-letters the whole batch with that reading's index; v1 readings of
// the same device flow beside batches.
func TestBatchesReachJetStreamAsTheyCame(t *testing.T) {
	for _, b := range testBrokers {
		t.Run(b.name, func(t *testing.T) { batchesReachJetStream(t, b.start(t)) })
	}
}

func batchesReachJetStream(t *testing.T, broker string) {
	regions := testharness.Regions(t)
	in := startIngest(t, broker, regions.URL("eu-west"), "eu-west")
	pub := publisher(t, broker, "b-1")
	const topic = "telemetry/eu-west/thermostat/b-1"

	now := time.Now()
	// 300 readings: over v1's 4096-byte bound, within v2's.
	first := protocol.AppendEncodeBatch(nil, batchOf("b-1", 1, 300, now))
	if len(first) <= protocol.MaxPayloadBytes || len(first) > protocol.MaxBatchBytes {
		t.Fatalf("the first batch is %d bytes, want between %d and %d", len(first), protocol.MaxPayloadBytes, protocol.MaxBatchBytes)
	}
	bad := batchOf("b-1", 301, 50, now)
	bad[3].Metrics[1].Value = math.NaN() // written as null
	badPayload := protocol.AppendEncodeBatch(nil, bad)
	single := protocol.AppendEncode(nil, protocol.Reading{Device: "b-1", Boot: 1764100000, Seq: 351, TS: now.UnixMilli(),
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21}}})

	publish(t, pub, topic, first)
	publish(t, pub, topic, first) // as a gateway retrying after a lost PUBACK
	publish(t, pub, topic, badPayload)
	publish(t, pub, topic, single)

	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := in.Stats(); st.Received != 4 {
			return fmt.Errorf("ingest received %d of 4", st.Received)
		}
		return nil
	})
	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st := in.Stats()
		if st.Accepted != 2 || st.Readings != 301 || st.Duplicates != 1 || st.Rejected[string(protocol.ReasonBadMetric)] != 1 {
			return fmt.Errorf("accepted %d messages of %d readings, %d duplicates, rejected %v; want 2 of 301, 1, bad_metric 1",
				st.Accepted, st.Readings, st.Duplicates, st.Rejected)
		}
		return nil
	})

	js, err := jetstream.NewWithDomain(testharness.Connect(t, regions.URL("eu-west")), "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	readings, err := js.Stream(ctx, stream.ReadingsStream)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id   string
		body []byte
	}{{"b-1:1764100000:1-300", first}, {"b-1:1764100000:351", single}}
	if got := streamMsgs(t, js, stream.ReadingsStream); got != uint64(len(want)) {
		t.Fatalf("READINGS holds %d messages, want %d", got, len(want))
	}
	for i, w := range want {
		m, err := readings.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != w.id {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i+1, id, w.id)
		}
		if string(m.Data) != string(w.body) {
			t.Errorf("message %d: body is not the payload as it came", i+1)
		}
	}

	dl, err := js.Stream(ctx, stream.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(protocol.HeaderReason); got != string(protocol.ReasonBadMetric) {
		t.Errorf("dead letter reason %q, want %s", got, protocol.ReasonBadMetric)
	}
	if detail := m.Header.Get(protocol.HeaderDetail); !strings.Contains(detail, "readings[3] (seq 304)") {
		t.Errorf("dead letter detail %q does not name readings[3] (seq 304)", detail)
	}
	if string(m.Data) != string(badPayload) {
		t.Error("the dead letter is not the whole batch as it came")
	}
}
