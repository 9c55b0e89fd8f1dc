package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// storedMsg is one message read back from a stream.
type storedMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// readStream returns every message of name, in order.
func readStream(t *testing.T, js jetstream.JetStream, name string) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := streamMsgs(t, js, name)
	c, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer on %s: %v", name, err)
	}
	var out []storedMsg
	for uint64(len(out)) < want {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetching from %s: %v", name, err)
		}
		for m := range batch.Messages() {
			out = append(out, storedMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("fetching from %s: %v", name, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages of %s", len(out), want, name)
		}
	}
	return out
}

// checkExactlyOnce fails unless READINGS holds each of want exactly once
// and nothing else.
func checkExactlyOnce(t *testing.T, js jetstream.JetStream, want map[string]bool) {
	t.Helper()
	got := map[string]int{}
	for _, m := range readStream(t, js, stream.ReadingsStream) {
		got[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	testharness.CheckExactlyOnce(t, "READINGS", want, got)
}

func jetStream(t *testing.T, url, domain string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.NewWithDomain(testharness.Connect(t, url), domain)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishReadings publishes seq from..to of device with QoS 1 and returns
// their identities.
func publishReadings(t *testing.T, c mqtt.Client, region, device string, from, to uint64, want map[string]bool) {
	t.Helper()
	now := time.Now()
	var toks []mqtt.Token
	for seq := from; seq <= to; seq++ {
		toks = append(toks, c.Publish("telemetry/"+region+"/thermostat/"+device, 1, false, reading(device, seq, now)))
		want[fmt.Sprintf("%s:%d:%d", device, 1764100000, seq)] = true
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publishing: %v", tok.Error())
		}
	}
}

func waitStored(t *testing.T, js jetstream.JetStream, name string, n int) {
	t.Helper()
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if got := streamMsgs(t, js, name); got != uint64(n) {
			return fmt.Errorf("%s holds %d, want %d", name, got, n)
		}
		return nil
	})
}

// TestInstancesShareTheLoadWithoutLossOrDoubles runs two instances of one
// region, on real Mosquitto and on the embedded broker: each reading goes
// to exactly one of them; while
// one is down, what the broker routes to it waits in its persistent session
// and arrives when it returns.
func TestInstancesShareTheLoadWithoutLossOrDoubles(t *testing.T) {
	for _, b := range testBrokers {
		t.Run(b.name, func(t *testing.T) { instancesShareTheLoad(t, b.start(t)) })
	}
}

func instancesShareTheLoad(t *testing.T, broker string) {
	regions := testharness.Regions(t)
	url := regions.URL("eu-west")
	cfg := func(instance string) ingest.Config {
		return ingest.Config{Region: "eu-west", Instance: instance, Broker: broker, NATSURL: url, MaxInflight: 64}
	}
	a, b := runIngest(t, cfg("a")), runIngest(t, cfg("b"))
	js := jetStream(t, url, "eu-west")
	pub := publisher(t, broker, "th-1")
	want := map[string]bool{}

	// Both subscribe asynchronously after connecting: wait until each has
	// taken a reading before counting shares.
	next := uint64(1)
	testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		publishReadings(t, pub, "eu-west", "th-1", next, next, want)
		next++
		if a.Stats().Received == 0 || b.Stats().Received == 0 {
			return fmt.Errorf("not both subscribed yet: a received %d, b %d", a.Stats().Received, b.Stats().Received)
		}
		return nil
	})
	publishReadings(t, pub, "eu-west", "th-1", next, next+399, want)
	next += 400
	waitStored(t, js, stream.ReadingsStream, len(want))
	sa, sb := a.Stats(), b.Stats()
	t.Logf("both up: a took %d, b took %d of %d", sa.Received, sb.Received, len(want))
	if sa.Received+sb.Received != uint64(len(want)) || sa.Duplicates+sb.Duplicates != 0 {
		t.Fatalf("a received %d, b %d, duplicates %d+%d: want %d delivered once in all", sa.Received, sb.Received, sa.Duplicates, sb.Duplicates, len(want))
	}
	// Shared, not evenly: Mosquitto alternates; the embedded broker (mochi
	// v2.7.9, Subscribers.SelectShared) takes the first member in Go's map
	// order, which splits two members about 3:1 (104 to 120 of 400 for the
	// smaller share in five runs).
	if min(sa.Accepted, sb.Accepted) < uint64(len(want))/5 {
		t.Errorf("load not shared: a accepted %d, b %d of %d", sa.Accepted, sb.Accepted, len(want))
	}

	// b goes away; its session stays in the broker.
	b.Stop(t)
	before := a.Stats().Received
	publishReadings(t, pub, "eu-west", "th-1", next, next+399, want)
	next += 400
	// Mosquitto 2.0 keeps routing b's share to b's session while b is
	// down: a gets about half, the rest waits for b. (The embedded broker
	// may give a more.)
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if got := a.Stats().Received - before; got < 150 {
			return fmt.Errorf("a took %d of 400 while b was down", got)
		}
		return nil
	})
	t.Logf("b down: a took %d of 400; READINGS holds %d of %d", a.Stats().Received-before, streamMsgs(t, js, stream.ReadingsStream), len(want))

	b2 := runIngest(t, cfg("b"))
	waitStored(t, js, stream.ReadingsStream, len(want))
	t.Logf("b back: b took %d, of which %d redelivered", b2.Stats().Received, b2.Stats().Redelivered)
	checkExactlyOnce(t, js, want)
	if d := a.Stats().Duplicates + b2.Stats().Duplicates; d != 0 {
		t.Errorf("%d readings delivered twice", d)
	}
}

// TestStoppingGivesUpAfterOneDrainTimeout stops an ingest while JetStream
// can store nothing (READINGS does not exist yet): everything in flight is
// given up after one DrainTimeout, not one per message, and the broker
// redelivers all of it to the next session, stored once.
func TestStoppingGivesUpAfterOneDrainTimeout(t *testing.T) {
	broker := openMosquitto(t).URL()
	_, url := testharness.NATS(t, "us-east")
	js := jetStream(t, url, "us-east")
	cfg := ingest.Config{Region: "us-east", Instance: "1", Broker: broker, NATSURL: url, MaxInflight: 64,
		DrainTimeout: 300 * time.Millisecond}
	first := runIngest(t, cfg)
	pub := publisher(t, broker, "th-1")
	want := map[string]bool{}
	publishReadings(t, pub, "us-east", "th-1", 1, 40, want)
	const held = 20
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := first.Stats().Received; got < held {
			return fmt.Errorf("ingest holds %d of the readings, want at least %d", got, held)
		}
		return nil
	})
	start := time.Now()
	first.Stop(t)
	// A deadline per message made this held × DrainTimeout (6 s or more).
	if took := time.Since(start); took > 10*cfg.DrainTimeout {
		t.Errorf("stopping with %d messages unconfirmed took %s, drain timeout %s", first.Stats().Received, took, cfg.DrainTimeout)
	}
	if st := first.Stats(); st.Accepted+st.Duplicates != 0 {
		t.Fatalf("JetStream confirmed %d with no stream", st.Accepted+st.Duplicates)
	}

	topo := stream.DefaultTopology([]string{"us-east"})
	if _, err := js.CreateStream(context.Background(), topo.ReadingsConfig("us-east")); err != nil {
		t.Fatal(err)
	}
	second := runIngest(t, cfg)
	waitStored(t, js, stream.ReadingsStream, len(want))
	checkExactlyOnce(t, js, want)
	if st := second.Stats(); st.Redelivered < held {
		t.Errorf("the second session got %d redelivered, want the %d the first held", st.Redelivered, held)
	}
}

// TestPoisonIsIsolatedAfterBoundedAttempts gives JetStream messages it
// refuses outright (too large for the stream): each is isolated after
// MaxAttempts tries and the readings behind it still flow.
func TestPoisonIsIsolatedAfterBoundedAttempts(t *testing.T) {
	broker := openMosquitto(t).URL()
	_, url := testharness.NATS(t, "us-east")
	js := jetStream(t, url, "us-east")
	createRefusingStreams(t, js)
	in := runIngest(t, ingest.Config{Region: "us-east", Broker: broker, NATSURL: url, MaxInflight: 64, MaxAttempts: 3})
	pub := publisher(t, broker, "th-1")

	now := time.Now()
	big := protocol.Reading{Version: 1, Device: "th-1", Boot: 1764100000, Seq: 2, TS: now.UnixMilli()}
	for i := range 30 {
		big.Metrics = append(big.Metrics, protocol.Metric{Name: fmt.Sprintf("metric_with_a_long_name_%02d", i), Value: float64(i)})
	}
	bigReading := protocol.AppendEncode(nil, big)
	badJSON := []byte(`{"v":1,"device":"` + strings.Repeat("x", 3000) + `",`)
	topic := "telemetry/us-east/thermostat/th-1"
	publish(t, pub, topic, reading("th-1", 1, now))
	publish(t, pub, topic, bigReading)
	publish(t, pub, topic, badJSON)
	publish(t, pub, topic, reading("th-1", 3, now))

	waitStored(t, js, stream.ReadingsStream, 2)
	waitStored(t, js, stream.DeadLetterStream, 2)
	dl := readStream(t, js, stream.DeadLetterStream)
	cases := []struct {
		name, reason, detail, omitted string
		body                          []byte
	}{
		{"refused reading kept with its body", string(ingest.ReasonPublishFailed), "message size exceeds maximum", "", bigReading},
		{"refused dead letter kept without its body", string(protocol.ReasonBadJSON), "body omitted", strconv.Itoa(len(badJSON)), nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := dl[i]
			if got := m.Header.Get(protocol.HeaderReason); got != c.reason {
				t.Errorf("reason %q, want %q", got, c.reason)
			}
			if want := "deadletter.us-east." + c.reason; m.Subject != want {
				t.Errorf("subject %q, want %q", m.Subject, want)
			}
			if d := m.Header.Get(protocol.HeaderDetail); !strings.Contains(d, c.detail) {
				t.Errorf("detail %q does not contain %q", d, c.detail)
			}
			if got := m.Header.Get(protocol.HeaderOmitted); got != c.omitted {
				t.Errorf("%s %q, want %q", protocol.HeaderOmitted, got, c.omitted)
			}
			if string(m.Data) != string(c.body) {
				t.Errorf("body of %d bytes, want %d", len(m.Data), len(c.body))
			}
		})
	}
	st := in.Stats()
	if st.Isolated != 2 || st.Accepted != 2 || st.Rejected[string(ingest.ReasonPublishFailed)] != 1 {
		t.Errorf("stats %+v: want 2 isolated, 2 accepted, 1 publish_failed", st)
	}
}

// TestGoldenCorpusIsDeadLetteredWithItsReason replays the protocol's
// invalid golden payloads (testdata/invalid/<reason>/) through Mosquitto:
// every one lands in DEADLETTER with its reason and original bytes, and a
// valid reading behind them still gets through.
func TestGoldenCorpusIsDeadLetteredWithItsReason(t *testing.T) {
	files, err := filepath.Glob("../internal/protocol/testdata/invalid/*/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden payloads: %v", err)
	}
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	url := regions.URL("us-east")
	// The golden payloads are judged at the protocol tests' fixed time.
	goldenNow := time.UnixMilli(1764100060000)
	in := runIngest(t, ingest.Config{Region: "us-east", Broker: broker, NATSURL: url, MaxInflight: 64,
		Now: func() time.Time { return goldenNow }})
	pub := publisher(t, broker, "th-00042")

	const topic = "telemetry/us-east/thermo/th-00042"
	wantReasons := map[string]int{}
	byBody := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		reason := filepath.Base(filepath.Dir(f))
		wantReasons[reason]++
		byBody[string(b)] = reason
		publish(t, pub, topic, b)
	}
	valid := protocol.AppendEncode(nil, protocol.Reading{Version: 1, Device: "th-00042", Boot: 1, Seq: 1, TS: goldenNow.UnixMilli(),
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: 20}}})
	publish(t, pub, topic, valid)

	js := jetStream(t, url, "us-east")
	waitStored(t, js, stream.DeadLetterStream, len(files))
	waitStored(t, js, stream.ReadingsStream, 1)
	gotReasons := map[string]int{}
	for _, m := range readStream(t, js, stream.DeadLetterStream) {
		reason := m.Header.Get(protocol.HeaderReason)
		gotReasons[reason]++
		if want, ok := byBody[string(m.Data)]; !ok {
			t.Errorf("dead letter %s: body is not one of the payloads sent", reason)
		} else if want != reason {
			t.Errorf("payload from testdata/invalid/%s dead-lettered as %s (%s)", want, reason, m.Header.Get(protocol.HeaderDetail))
		}
		if m.Subject != "deadletter.us-east."+reason || m.Header.Get(protocol.HeaderTopic) != topic || m.Header.Get(protocol.HeaderDetail) == "" {
			t.Errorf("dead letter %s: subject %q, headers %v", reason, m.Subject, m.Header)
		}
	}
	for reason, n := range wantReasons {
		if gotReasons[reason] != n {
			t.Errorf("%s: %d dead letters, want %d", reason, gotReasons[reason], n)
		}
	}
	if st := in.Stats(); st.Accepted != 1 {
		t.Errorf("accepted %d, want the one valid reading", st.Accepted)
	}
}

// TestShutdownLeavesWhatIsUnacknowledgedForRedelivery stops ingest while
// the broker is pushing a backlog at it, then starts it again: every reading
// arrives exactly once, part of them redelivered by the broker.
func TestShutdownLeavesWhatIsUnacknowledgedForRedelivery(t *testing.T) {
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	url := regions.URL("ap-south")
	js := jetStream(t, url, "ap-south")
	cfg := ingest.Config{Region: "ap-south", Broker: broker, NATSURL: url, MaxInflight: 256}
	pub := publisher(t, broker, "th-9")
	want := map[string]bool{}

	// A first run creates the persistent session and its subscription.
	first := runIngest(t, cfg)
	testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		publishReadings(t, pub, "ap-south", "th-9", 1, 1, want)
		if first.Stats().Accepted == 0 {
			return errors.New("not subscribed yet")
		}
		return nil
	})
	first.Stop(t)

	// A backlog waits in the session; the next run is stopped as soon as
	// the broker starts pushing it.
	const backlog = 3000
	publishReadings(t, pub, "ap-south", "th-9", 2, backlog+1, want)
	second := runIngest(t, cfg)
	testharness.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		if second.Stats().Received == 0 {
			return errors.New("nothing received yet")
		}
		return nil
	})
	second.Stop(t)
	stored := streamMsgs(t, js, stream.ReadingsStream)
	t.Logf("stopped after receiving %d (accepted %d); READINGS holds %d of %d", second.Stats().Received, second.Stats().Accepted, stored, len(want))

	third := runIngest(t, cfg)
	waitStored(t, js, stream.ReadingsStream, len(want))
	checkExactlyOnce(t, js, want)
	st := third.Stats()
	t.Logf("restarted: received %d, redelivered %d, duplicates %d", st.Received, st.Redelivered, st.Duplicates)
	if st.Redelivered == 0 {
		t.Errorf("nothing redelivered: the stopped run left no unacknowledged message in flight")
	}
}

// createRefusingStreams creates us-east's streams with small message size
// limits: JetStream refuses a big but valid reading outright, and the dead
// letter of a big payload too.
func createRefusingStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	topo := stream.DefaultTopology([]string{"us-east"})
	readings, deadLetters := topo.ReadingsConfig("us-east"), topo.DeadLetterConfig("us-east")
	readings.MaxMsgSize = 800
	deadLetters.MaxMsgSize = 2500
	for _, c := range []jetstream.StreamConfig{readings, deadLetters} {
		if _, err := js.CreateStream(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
}
