package ingest_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

func TestDeadLetterID(t *testing.T) {
	const topic = "telemetry/us-east/probe/p-1"
	base := ingest.DeadLetterID(topic, []byte(`{"v":1,`))
	if !regexp.MustCompile(`^dl:[0-9a-f]{32}$`).MatchString(base) {
		t.Fatalf("id %q: want dl: and 32 hex digits", base)
	}
	cases := []struct {
		name    string
		topic   string
		payload string
		same    bool
	}{
		{"same topic and bytes", topic, `{"v":1,`, true},
		{"other bytes", topic, `{"v":1, `, false},
		{"other topic", "telemetry/us-east/other/p-1", `{"v":1,`, false},
		{"bytes moved from the payload into the topic", topic + "{", `"v":1,`, false},
		{"empty payload", topic, ``, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ingest.DeadLetterID(c.topic, []byte(c.payload)); (got == base) != c.same {
				t.Errorf("id %q, base %q: want same=%v", got, base, c.same)
			}
		})
	}
}

// deadLetterIDs reads DEADLETTER and returns how many dead letters carry
// each Nats-Msg-Id, failing on a dead letter without one.
func deadLetterIDs(t *testing.T, js jetstream.JetStream) (map[string]int, []storedMsg) {
	t.Helper()
	msgs := readStream(t, js, stream.DeadLetterStream)
	ids := map[string]int{}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id == "" {
			t.Errorf("dead letter %s without %s: %v", m.Subject, jetstream.MsgIDHeader, m.Header)
		}
		ids[id]++
	}
	return ids, msgs
}

// untilSubscribed publishes payload on topic until in has received a
// message: the shared subscription is made after the connection, so a
// message published before it would not be routed to ingest.
func untilSubscribed(t *testing.T, in *ingest.Ingest, pub mqtt.Client, topic string, payload []byte) {
	t.Helper()
	testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		publish(t, pub, topic, payload)
		if in.Stats().Received == 0 {
			return fmt.Errorf("ingest has received nothing yet")
		}
		return nil
	})
}

func rejectedSum(st ingest.Stats) uint64 {
	var n uint64
	for _, v := range st.Rejected {
		n += v
	}
	return n
}

// TestHostileMessageSentTwiceIsDeadLetteredOnce sends hostile messages
// through Mosquitto into the applied topology, one of them twice with the
// same bytes, as a device retrying after a lost PUBACK does: DEADLETTER
// holds each distinct message once, and the copy is counted as a dead
// letter duplicate.
func TestHostileMessageSentTwiceIsDeadLetteredOnce(t *testing.T) {
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	url := regions.URL("us-east")
	js := jetStream(t, url, "us-east")
	s, err := js.Stream(context.Background(), stream.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := stream.DefaultTopology(nil).DuplicateWindow; info.Config.Duplicates != want {
		t.Errorf("DEADLETTER's duplicate window %v, want the topology's %v", info.Config.Duplicates, want)
	}

	in := runIngest(t, ingest.Config{Region: "us-east", Broker: broker, NATSURL: url, MaxInflight: 64})
	pub := publisher(t, broker, "p-1")
	const topic, other = "telemetry/us-east/probe/p-1", "telemetry/us-east/other/p-1"
	// The warm-up message may reach ingest any number of times: its copies
	// collapse too.
	warmUp := []byte(`{"v":1,"warm_up":`)
	untilSubscribed(t, in.Ingest, pub, topic, warmUp)

	a, b := []byte(`{"v":1,"device":"p-1",`), []byte(`{"v":9,"device":"p-1"}`)
	sends := []struct {
		topic   string
		payload []byte
	}{
		{topic, a},
		{topic, b}, // different bytes: a dead letter of its own
		{topic, a}, // the same bytes again: collapses
		{other, a}, // the same bytes on another topic: a dead letter of its own
	}
	for _, s := range sends {
		publish(t, pub, s.topic, s.payload)
	}
	want := map[string]int{
		ingest.DeadLetterID(topic, warmUp): 1,
		ingest.DeadLetterID(topic, a):      1,
		ingest.DeadLetterID(topic, b):      1,
		ingest.DeadLetterID(other, a):      1,
	}

	// Every rejection is either stored or collapsed; wait until all are one
	// or the other.
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		st := in.Stats()
		if n := rejectedSum(st); n != st.Received || st.DeadLetterDuplicates+uint64(len(want)) != n {
			return fmt.Errorf("received %d, rejected %d, dead letter duplicates %d: want rejected = received = %d stored + duplicates",
				st.Received, n, st.DeadLetterDuplicates, len(want))
		}
		return nil
	})
	got, msgs := deadLetterIDs(t, js)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters by Nats-Msg-Id %v, want %v", got, want)
	}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id != ingest.DeadLetterID(m.Header.Get(protocol.HeaderTopic), m.Data) {
			t.Errorf("dead letter %s: id %s is not that of its topic and body", m.Subject, id)
		}
	}
	st := in.Stats()
	if st.DeadLetterDuplicates < 1 {
		t.Errorf("dead letter duplicates %d, want at least the copy of a", st.DeadLetterDuplicates)
	}
	t.Logf("received %d, rejected %v, dead letter duplicates %d", st.Received, st.Rejected, st.DeadLetterDuplicates)
}

// TestIsolatedMessageSentTwiceIsDeadLetteredOnce sends twice each of two
// messages JetStream refuses outright: the publish_failed dead letter of a
// reading keeps the reading's id, the bodiless one keeps the id of the dead
// letter it replaces, so the copies collapse.
func TestIsolatedMessageSentTwiceIsDeadLetteredOnce(t *testing.T) {
	broker := openMosquitto(t).URL()
	_, url := testharness.NATS(t, "us-east")
	js := jetStream(t, url, "us-east")
	createRefusingStreams(t, js)
	in := runIngest(t, ingest.Config{Region: "us-east", Broker: broker, NATSURL: url, MaxInflight: 64, MaxAttempts: 2})
	pub := publisher(t, broker, "th-1")
	const topic = "telemetry/us-east/thermostat/th-1"
	now := time.Now()
	untilSubscribed(t, in.Ingest, pub, topic, reading("th-1", 1, now))

	big := protocol.Reading{Version: 1, Device: "th-1", Boot: 1764100000, Seq: 2, TS: now.UnixMilli()}
	for i := range 30 {
		big.Metrics = append(big.Metrics, protocol.Metric{Name: fmt.Sprintf("metric_with_a_long_name_%02d", i), Value: float64(i)})
	}
	bigReading := protocol.AppendEncode(nil, big)
	badJSON := []byte(`{"v":1,"device":"` + strings.Repeat("x", 3000) + `",`)
	for range 2 {
		publish(t, pub, topic, bigReading)
		publish(t, pub, topic, badJSON)
	}
	want := map[string]int{big.ID(): 1, ingest.DeadLetterID(topic, badJSON): 1}

	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if st := in.Stats(); rejectedSum(st) != 4 {
			return fmt.Errorf("rejected %v, want 4 in all", st.Rejected)
		}
		return nil
	})
	got, msgs := deadLetterIDs(t, js)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters by Nats-Msg-Id %v, want %v", got, want)
	}
	for _, m := range msgs {
		if m.Header.Get(protocol.HeaderReason) == string(ingest.ReasonPublishFailed) && string(m.Data) != string(bigReading) {
			t.Errorf("publish_failed dead letter lost its body")
		}
	}
	st := in.Stats()
	if st.DeadLetterDuplicates != 2 || st.Isolated != 4 {
		t.Errorf("dead letter duplicates %d, isolated %d: want 2 and 4 (each copy is isolated again, then collapses)", st.DeadLetterDuplicates, st.Isolated)
	}
}

// TestHostileMessageRedeliveredAfterIngestStopIsDeadLetteredOnce leaves
// hostile messages dead-lettered but not acknowledged in MQTT, as a crash
// between the JetStream acknowledgement and the PUBACK would: a valid
// reading ahead of them waits for a READINGS stream that does not exist
// yet, so the in-order PUBACKs stop at it. The broker goes away, ingest
// stops, and when both are back the broker redelivers the messages to the
// same session: DEADLETTER still holds each hostile message once.
func TestHostileMessageRedeliveredAfterIngestStopIsDeadLetteredOnce(t *testing.T) {
	mosquitto := openMosquitto(t)
	broker := mosquitto.URL()
	_, url := testharness.NATS(t, "us-east")
	js := jetStream(t, url, "us-east")
	topo := stream.DefaultTopology([]string{"us-east"})
	if _, err := js.CreateStream(context.Background(), topo.DeadLetterConfig("us-east")); err != nil {
		t.Fatal(err)
	}
	cfg := ingest.Config{Region: "us-east", Instance: "1", Broker: broker, NATSURL: url, MaxInflight: 64,
		DrainTimeout: 200 * time.Millisecond}
	first := runIngest(t, cfg)
	pub := publisher(t, broker, "th-1")
	const topic = "telemetry/us-east/thermostat/th-1"
	warmUp := []byte(`{"v":1,"warm_up":`)
	untilSubscribed(t, first.Ingest, pub, topic, warmUp)

	const hostile = 5
	publish(t, pub, topic, reading("th-1", 1, time.Now())) // stalls the PUBACKs behind it
	want := map[string]int{ingest.DeadLetterID(topic, warmUp): 1}
	for i := range hostile {
		p := fmt.Appendf(nil, `{"v":1,"device":"th-1","hostile":%d`, i)
		publish(t, pub, topic, p)
		want[ingest.DeadLetterID(topic, p)] = 1
	}
	waitStored(t, js, stream.DeadLetterStream, len(want))

	// Dead-lettered, not acknowledged: the broker's connection goes, then
	// ingest stops; its PUBACKs have nowhere to go.
	if err := mosquitto.Stop(); err != nil {
		t.Fatal(err)
	}
	first.Stop(t)
	if err := mosquitto.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), topo.ReadingsConfig("us-east")); err != nil {
		t.Fatal(err)
	}
	second := runIngest(t, cfg)
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		st := second.Stats()
		if st.Accepted+st.Duplicates != 1 || rejectedSum(st) < hostile || st.Received != st.Accepted+st.Duplicates+rejectedSum(st) {
			return fmt.Errorf("second run: received %d, accepted %d, duplicates %d, rejected %v", st.Received, st.Accepted, st.Duplicates, st.Rejected)
		}
		return nil
	})
	got, _ := deadLetterIDs(t, js)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters by Nats-Msg-Id %v, want %v", got, want)
	}
	if n := streamMsgs(t, js, stream.ReadingsStream); n != 1 {
		t.Errorf("READINGS holds %d, want the one reading", n)
	}
	st := second.Stats()
	t.Logf("second run: received %d, redelivered %d, rejected %v, dead letter duplicates %d", st.Received, st.Redelivered, st.Rejected, st.DeadLetterDuplicates)
	if st.Redelivered < hostile+1 || st.DeadLetterDuplicates != rejectedSum(st) {
		t.Errorf("redelivered %d, dead letter duplicates %d of %d rejected: want the reading and %d hostile messages redelivered, every dead letter already held",
			st.Redelivered, st.DeadLetterDuplicates, rejectedSum(st), hostile)
	}
}
