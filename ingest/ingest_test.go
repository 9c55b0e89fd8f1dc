package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// startIngest runs a bridge for region until the test ends.
func startIngest(t *testing.T, broker, natsURL, region string) *ingest.Ingest {
	t.Helper()
	return runIngest(t, ingest.Config{Region: region, Broker: broker, NATSURL: natsURL, MaxInflight: 64}).Ingest
}

// running is a bridge started by runIngest.
type running struct {
	*ingest.Ingest
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Stop stops the bridge gracefully and waits for Run to return.
func (r *running) Stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("ingest run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("ingest did not stop within 60s")
		}
		r.Close()
	})
}

// runIngest starts a bridge with cfg, stopped when the test ends unless
// stopped before, and waits until it is connected.
func runIngest(t *testing.T, cfg ingest.Config) *running {
	t.Helper()
	in, err := ingest.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Ingest: in, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() { r.Stop(t) })
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, in.Ready)
	return r
}

// testBrokers are the brokers the fault and hostile-input tests run
// against, each open to any client: real Mosquitto and the embedded
// broker. Each starts its broker and returns its URL.
var testBrokers = []struct {
	name  string
	start func(t *testing.T) string
}{
	{"mosquitto", func(t *testing.T) string { return openMosquitto(t).URL() }},
	{"embedded", func(t *testing.T) string { return startEmbedded(t, true) }},
}

// openMosquitto is real Mosquitto without the repository's password file
// and ACL. The tests of ingest publish on topics a device could not (other
// types, bad topic levels) to see what ingest does with them; that the
// broker keeps each device to its own topic is tested in internal/broker
// and by TestSpoofedDeviceIsDeadLetteredAsTopicMismatch.
func openMosquitto(t *testing.T) *testharness.Broker {
	t.Helper()
	return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Open: true})
}

// publisher connects anonymously with client id device.
func publisher(t *testing.T, broker, device string) mqtt.Client {
	t.Helper()
	// Anonymous: the test brokers are open (testBrokers), so that hostile
	// topics reach ingest rather than the broker's ACL.
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(device))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting publisher: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c mqtt.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publishing to %s: %v", topic, tok.Error())
	}
}

func reading(device string, seq uint64, ts time.Time) []byte {
	return protocol.AppendEncode(nil, protocol.Reading{
		Version: 1, Device: device, Boot: 1764100000, Seq: seq, TS: ts.UnixMilli(),
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21.5}, {Name: "humidity_pct", Value: 40}},
	})
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

func TestValidReadingsReachJetStreamOnceWithTheirIdentity(t *testing.T) {
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	in := startIngest(t, broker, regions.URL("eu-west"), "eu-west")
	pub := publisher(t, broker, "th-00001")

	const n = 50
	now := time.Now()
	for seq := uint64(1); seq <= n; seq++ {
		publish(t, pub, "telemetry/eu-west/thermostat/th-00001", reading("th-00001", seq, now))
	}
	// The same readings again, as a device retrying after a lost PUBACK would.
	for seq := uint64(1); seq <= 10; seq++ {
		publish(t, pub, "telemetry/eu-west/thermostat/th-00001", reading("th-00001", seq, now))
	}

	nc := testharness.Connect(t, regions.URL("eu-west"))
	js, err := jetstream.NewWithDomain(nc, "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := in.Stats().Duplicates; got != 10 {
			return fmt.Errorf("duplicates counted %v, want 10", got)
		}
		return nil
	})
	// Counted on the device too: a reading forged with a real one's
	// identity would show up there.
	if got := in.DuplicatesOf("th-00001"); got != 10 {
		t.Errorf("th-00001's duplicates %d, want 10", got)
	}
	if got := streamMsgs(t, js, stream.ReadingsStream); got != n {
		t.Fatalf("READINGS holds %d, want %d (duplicates must collapse)", got, n)
	}
	s, _ := js.Stream(context.Background(), stream.ReadingsStream)
	m, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "telemetry.eu-west.thermostat.th-00001" {
		t.Errorf("subject %q", m.Subject)
	}
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "th-00001:1764100000:1" {
		t.Errorf("Nats-Msg-Id %q, want th-00001:1764100000:1", id)
	}
	if string(m.Data) != string(reading("th-00001", 1, now)) {
		t.Errorf("body is not the original payload: %s", m.Data)
	}
	if got := in.Stats().Accepted; got != n {
		t.Errorf("accepted counted %v, want %d", got, n)
	}
}

func TestHostilePayloadsAreDeadLetteredWithTheirReason(t *testing.T) {
	for _, b := range testBrokers {
		t.Run(b.name, func(t *testing.T) { hostilePayloadsAreDeadLettered(t, b.start(t)) })
	}
}

func hostilePayloadsAreDeadLettered(t *testing.T, broker string) {
	regions := testharness.Regions(t)
	startIngest(t, broker, regions.URL("us-east"), "us-east")
	pub := publisher(t, broker, "p-1")

	now := time.Now()
	cases := []struct {
		reason  protocol.Reason
		topic   string
		payload []byte
	}{
		{protocol.ReasonTooLarge, "telemetry/us-east/probe/p-1", []byte(`{"v":1,"pad":"` + strings.Repeat("x", protocol.MaxPayloadBytes) + `"}`)},
		{protocol.ReasonBadTopic, "telemetry/us-east/PROBE/p-1", reading("p-1", 1, now)},
		{protocol.ReasonBadJSON, "telemetry/us-east/probe/p-1", []byte(`{"v":1,`)},
		{protocol.ReasonBadVersion, "telemetry/us-east/probe/p-1", []byte(`{"v":9,"device":"p-1"}`)},
		{protocol.ReasonTopicMismatch, "telemetry/us-east/probe/p-1", reading("p-2", 1, now)},
		{protocol.ReasonBadField, "telemetry/us-east/probe/p-1", []byte(`{"v":1,"device":"p-1","boot":-1,"seq":1,"ts":1,"metrics":{"a":1}}`)},
		{protocol.ReasonBadMetric, "telemetry/us-east/probe/p-1", []byte(fmt.Sprintf(`{"v":1,"device":"p-1","boot":1,"seq":1,"ts":%d,"metrics":{"a":"NaN"}}`, now.UnixMilli()))},
		{protocol.ReasonStale, "telemetry/us-east/probe/p-1", reading("p-1", 1, now.Add(-48*time.Hour))},
		{protocol.ReasonFuture, "telemetry/us-east/probe/p-1", reading("p-1", 1, now.Add(time.Hour))},
	}
	for _, c := range cases {
		publish(t, pub, c.topic, c.payload)
	}

	nc := testharness.Connect(t, regions.URL("us-east"))
	js, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := streamMsgs(t, js, stream.DeadLetterStream); got != uint64(len(cases)) {
			return fmt.Errorf("DEADLETTER holds %d, want %d", got, len(cases))
		}
		return nil
	})
	if got := streamMsgs(t, js, stream.ReadingsStream); got != 0 {
		t.Errorf("READINGS holds %d hostile payloads", got)
	}
	s, _ := js.Stream(context.Background(), stream.DeadLetterStream)
	for i, c := range cases {
		t.Run(string(c.reason), func(t *testing.T) {
			m, err := s.GetMsg(context.Background(), uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(protocol.HeaderReason); got != string(c.reason) {
				t.Errorf("reason %q, want %q (detail %q)", got, c.reason, m.Header.Get(protocol.HeaderDetail))
			}
			if want := "deadletter.us-east." + string(c.reason); m.Subject != want {
				t.Errorf("subject %q, want %q", m.Subject, want)
			}
			if string(m.Data) != string(c.payload) {
				t.Errorf("body is not the original bytes")
			}
			if m.Header.Get(protocol.HeaderTopic) == "" || m.Header.Get(protocol.HeaderDetail) == "" {
				t.Errorf("topic or detail header missing: %v", m.Header)
			}
		})
	}
}

// A message over the protocol's payload bound is kept as a too_large dead
// letter with its bytes, and acknowledged: the readings after it flow, and
// a restarted ingest does not get it again. (What ingest reads of one
// packet is bounded by the broker's own packet bound, 256 KiB in both.)
func TestTooLargeMessageIsDeadLetteredAndAcknowledged(t *testing.T) {
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	cfg := ingest.Config{Region: "us-east", Broker: broker, NATSURL: regions.URL("us-east")}
	first := runIngest(t, cfg)
	pub := publisher(t, broker, "p-1")
	const size = 5000
	publish(t, pub, "telemetry/us-east/probe/p-1", bytes.Repeat([]byte("x"), size))
	publish(t, pub, "telemetry/us-east/probe/p-1", reading("p-1", 1, time.Now()))

	js, err := jetstream.NewWithDomain(testharness.Connect(t, regions.URL("us-east")), "us-east")
	if err != nil {
		t.Fatal(err)
	}
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if d, r := streamMsgs(t, js, stream.DeadLetterStream), streamMsgs(t, js, stream.ReadingsStream); d != 1 || r != 1 {
			return fmt.Errorf("DEADLETTER holds %d, READINGS %d; want 1 and 1", d, r)
		}
		return nil
	})
	s, err := js.Stream(context.Background(), stream.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(protocol.HeaderReason); got != string(protocol.ReasonTooLarge) {
		t.Errorf("reason %q, want %q", got, protocol.ReasonTooLarge)
	}
	if got := m.Header.Get(protocol.HeaderOmitted); got != "" {
		t.Errorf("%s %q on a dead letter that fits DEADLETTER", protocol.HeaderOmitted, got)
	}
	if len(m.Data) != size {
		t.Errorf("dead letter keeps %d bytes of the %d-byte payload, want all", len(m.Data), size)
	}

	// Acknowledged: after a restart of the same session only the next
	// reading arrives, and nothing is dead-lettered again.
	first.Stop(t)
	second := runIngest(t, cfg)
	publish(t, pub, "telemetry/us-east/probe/p-1", reading("p-1", 2, time.Now()))
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if r := streamMsgs(t, js, stream.ReadingsStream); r != 2 {
			return fmt.Errorf("READINGS holds %d, want 2", r)
		}
		return nil
	})
	// Accepted is counted when JetStream's acknowledgement reaches ingest,
	// a moment after READINGS holds the reading.
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if st := second.Stats(); st.Accepted != 1 {
			return fmt.Errorf("after the restart ingest accepted %d, want 1", st.Accepted)
		}
		return nil
	})
	if st := second.Stats(); st.Received != 1 {
		t.Errorf("after the restart ingest received %d, want only the new reading: %+v", st.Received, st)
	}
	if d := streamMsgs(t, js, stream.DeadLetterStream); d != 1 {
		t.Errorf("DEADLETTER holds %d after the restart, want 1", d)
	}
}
