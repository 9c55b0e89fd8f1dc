package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// startBroker runs an embedded MQTT broker on a free port, with the
// pipeline's users and ACL (deploy/mosquitto: devices publish only on their
// own topic) and extra hooks, until the test ends. It returns its URL.
func startBroker(t *testing.T, hooks ...mqtt.Hook) string {
	t.Helper()
	_, url := startBrokerAt(t, "127.0.0.1:0", hooks...)
	return url
}

// startBrokerAt is startBroker on a given address. It returns a function
// that stops the broker before the test ends.
func startBrokerAt(t *testing.T, addr string, hooks ...mqtt.Hook) (stop func(), url string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	authHook, err := broker.NewAuthHook(broker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(authHook, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return stop, "tcp://" + tcp.Address()
}

// collector subscribes to every reading and keeps what arrived.
type collector struct {
	mu       sync.Mutex
	seqs     map[string]map[uint64]int // device -> seq -> times received
	topics   map[string]protocol.Topic
	boots    map[string]uint64
	problems []string
}

func subscribe(t *testing.T, broker string) *collector {
	t.Helper()
	c := &collector{seqs: map[string]map[uint64]int{}, topics: map[string]protocol.Topic{}, boots: map[string]uint64{}}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID("collector").SetCleanSession(true).
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword)
	client := paho.NewClient(opts)
	if tok := client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connecting to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { client.Disconnect(100) })
	tok := client.Subscribe("telemetry/#", 1, func(_ paho.Client, m paho.Message) {
		topic, b, err := protocol.Decode(m.Topic(), m.Payload(), time.Now(), protocol.Limits{})
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.problems = append(c.problems, fmt.Sprintf("%s %s: %v", m.Topic(), m.Payload(), err))
			return
		}
		if c.seqs[b.Device] == nil {
			c.seqs[b.Device] = map[uint64]int{}
		}
		for _, r := range b.Readings {
			c.seqs[b.Device][r.Seq]++
		}
		c.topics[b.Device] = topic
		if boot, ok := c.boots[b.Device]; ok && boot != b.Boot {
			c.problems = append(c.problems, fmt.Sprintf("%s: boot %d after %d", b.Device, b.Boot, boot))
		}
		c.boots[b.Device] = b.Boot
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribing: %v", tok.Error())
	}
	return c
}

// missing returns what of sent has not arrived, and checks that nothing
// arrived that was not sent.
func (c *collector) missing(sent []DeviceSent) (missing []string, problems []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	problems = append(problems, c.problems...)
	known := map[string]bool{}
	for _, ds := range sent {
		known[ds.Device] = true
		got := c.seqs[ds.Device]
		for seq := ds.FirstSeq; seq >= 1 && seq <= ds.LastSeq; seq++ {
			if got[seq] == 0 {
				missing = append(missing, fmt.Sprintf("%s:%d:%d", ds.Device, ds.Boot, seq))
			}
		}
		for seq := range got {
			if seq < 1 || seq > ds.LastSeq {
				problems = append(problems, fmt.Sprintf("%s: seq %d arrived, last sent %d", ds.Device, seq, ds.LastSeq))
			}
		}
		if ds.LastSeq > 0 && len(got) > 0 {
			if tp := c.topics[ds.Device]; tp.Region != ds.Region || tp.DeviceType != ds.Type {
				problems = append(problems, fmt.Sprintf("%s: topic %+v, want region %s type %s", ds.Device, tp, ds.Region, ds.Type))
			}
			if c.boots[ds.Device] != ds.Boot {
				problems = append(problems, fmt.Sprintf("%s: boot %d, want %d", ds.Device, c.boots[ds.Device], ds.Boot))
			}
		}
	}
	for dev := range c.seqs {
		if !known[dev] {
			problems = append(problems, "unknown device "+dev)
		}
	}
	return missing, problems
}

// checkArrived waits until everything sent has arrived, gapless per device.
func checkArrived(t *testing.T, c *collector, sent []DeviceSent) {
	t.Helper()
	var missing, problems []string
	_ = poll.Until(10*time.Second, 20*time.Millisecond, func() error { // what is missing then is reported below
		if missing, problems = c.missing(sent); len(missing) > 0 {
			return errors.New("readings missing")
		}
		return nil
	})
	if len(missing) > 0 {
		t.Errorf("%d readings sent but not received, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if len(problems) > 0 {
		t.Errorf("%d problems, e.g. %v", len(problems), problems[:min(5, len(problems))])
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := poll.Until(timeout, 10*time.Millisecond, func() error {
		if !cond() {
			return errors.New(what)
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestFleetPublishesEveryReading(t *testing.T) {
	broker := startBroker(t)
	c := subscribe(t, broker)
	cfg := Config{
		Broker:   broker,
		Devices:  12,
		Rate:     200,
		Duration: 2 * time.Second,
		Seed:     1,
	}
	f, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var progress testharness.SyncBuffer
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		f.Progress(t.Context(), &progress, 500*time.Millisecond)
	}()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	<-progressDone

	s := f.Stats()
	t.Logf("stats %+v\nprogress:\n%s", s, progress.String())
	const want = 400 // 200/s for 2 s
	if s.Sent != want || s.Acked != want || s.Messages != want || s.Errors != 0 || s.Resent != 0 || s.Skipped != 0 || s.InFlight != 0 {
		t.Errorf("stats %+v: want %d sent and acknowledged, no errors, none resent, skipped or in flight", s, want)
	}
	if s.Connected != 0 {
		t.Errorf("%d devices still connected after Run", s.Connected)
	}
	if s.AckP50 <= 0 || s.AckP99 < s.AckP50 || s.AckMax < s.AckP99 {
		t.Errorf("ack latency p50 %v p99 %v max %v: want 0 < p50 <= p99 <= max", s.AckP50, s.AckP99, s.AckMax)
	}
	if s.Elapsed < 1900*time.Millisecond || s.Elapsed > 5*time.Second {
		t.Errorf("published for %v, want about 2s", s.Elapsed)
	}

	sent := f.Sent()
	var total uint64
	for _, ds := range sent {
		total += ds.LastSeq
		// Round-robin: 400 over 12 devices is 33 or 34 each.
		if ds.FirstSeq != 1 || ds.LastSeq < 33 || ds.LastSeq > 34 || ds.Acked != ds.LastSeq {
			t.Errorf("%+v: want seq 1 to 33 or 34, all acknowledged", ds)
		}
	}
	if total != want {
		t.Errorf("devices sent %d in all, want %d", total, want)
	}
	checkArrived(t, c, sent)

	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[len(lines)-1], "errors 0") || !strings.Contains(lines[0], "sent ") {
		t.Errorf("progress output:\n%s\nwant a line per interval and a last one with no errors", progress.String())
	}

	checkMetrics(t, f, map[string]float64{
		"telemetry_devices_published_total":      want,
		"telemetry_devices_messages_total":       want, // v1: a message per reading
		"telemetry_devices_batched":              0,
		"telemetry_devices_acked_total":          want,
		"telemetry_devices_publish_errors_total": 0,
		"telemetry_devices_inflight":             0,
		"telemetry_devices_connected":            0,
		"telemetry_devices_simulated":            12,
		"telemetry_devices_ack_latency_seconds":  want, // sample count
	})

	if err := f.Run(ctx); err != ErrRunning {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

// checkMetrics gathers the fleet's registry and compares counters, gauges
// and histogram sample counts with want.
func checkMetrics(t *testing.T, f *Fleet, want map[string]float64) {
	t.Helper()
	families, err := f.Registry().Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			got[mf.GetName()] = m.Counter.GetValue()
		case m.Gauge != nil:
			got[mf.GetName()] = m.Gauge.GetValue()
		case m.Histogram != nil:
			got[mf.GetName()] = float64(m.Histogram.GetSampleCount())
		}
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("metric %s = %v (present %v), want %v", name, g, ok, w)
		}
	}
}

func TestFleetStopsOnCancel(t *testing.T) {
	broker := startBroker(t)
	c := subscribe(t, broker)
	f, err := New(Config{Broker: broker, Devices: 5, Rate: 100, Seed: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	waitFor(t, 10*time.Second, "50 acknowledged readings", func() bool { return f.Stats().Acked >= 50 })
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	s := f.Stats()
	if s.Errors != 0 || s.InFlight != 0 || s.Acked != s.Sent || s.Connected != 0 {
		t.Errorf("stats after cancel %+v: want everything sent acknowledged and devices disconnected", s)
	}
	checkArrived(t, c, f.Sent())
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestFleetSurvivesBrokerRestart stops the broker mid-run and starts
// another on the same address: the devices reconnect by themselves, publish
// again what was unacknowledged, and in the end every reading sent is
// acknowledged, with the sequence of acknowledged readings gapless.
// (Whether the first broker passed on what it acknowledged before it
// stopped is the broker's business, so no subscriber checks arrivals on
// it.) With batches, what is published again is the same batches: the
// new broker sees their boundaries unchanged.
func TestFleetSurvivesBrokerRestart(t *testing.T) {
	for _, batch := range []int{1, 5} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) { testBrokerRestart(t, batch, 0) })
	}
	// The three devices behind one gateway share its connection: it drops
	// once, one of them reconnects it, and each publishes its own again.
	t.Run("gateway", func(t *testing.T) { testBrokerRestart(t, 5, 3) })
}

func testBrokerRestart(t *testing.T, batch, gateway int) {
	g := newGate()
	stopBroker, broker := startBrokerAt(t, "127.0.0.1:0", g)
	cfg := Config{Broker: broker, Devices: 3, Rate: 60, Seed: 3, DrainTimeout: 10 * time.Second,
		Batch: batch, BatchWait: MaxBatchWait, Gateway: gateway}
	conns := uint64(3)
	if gateway > 0 {
		cfg.Regions, cfg.Types, conns = []string{"eu-west"}, []string{TypeThermostat}, 1
	}
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	waitFor(t, 10*time.Second, "20 acknowledged readings", func() bool { return f.Stats().Acked >= 20 })

	// Stall the broker until every device has a message unacknowledged,
	// then stop it: those messages must be published again.
	g.hold()
	waitFor(t, 10*time.Second, "every device with readings in flight", func() bool {
		for _, ds := range f.Sent() {
			if ds.Acked == ds.LastSeq {
				return false
			}
		}
		return true
	})
	// Stopping waits for the stalled publishes, so the gate opens only
	// once the connections are closed and PUBACKs can no longer go out.
	stopped := make(chan struct{})
	go func() { defer close(stopped); stopBroker() }()
	waitFor(t, 10*time.Second, "every connection to notice", func() bool { return f.Stats().ConnectionsLost >= conns })
	g.release()
	<-stopped
	startBrokerAt(t, strings.TrimPrefix(broker, "tcp://"))
	c := subscribeRaw(t, broker)
	before := f.Stats()
	waitFor(t, 20*time.Second, "acknowledgements from the new broker",
		func() bool { return f.Stats().Acked >= before.Sent+20 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Stats()
	if s.InFlight != 0 || s.Acked != s.Sent || s.Errors < 3 || s.Resent != s.Errors || s.ConnectionsLost < conns || s.Batched != 0 {
		t.Errorf("stats %+v: want every reading sent acknowledged, 3 or more failed publishes, each resent, %d connections lost", s, conns)
	}
	sent := map[string]DeviceSent{}
	for _, ds := range f.Sent() {
		if ds.Acked != ds.LastSeq {
			t.Errorf("%+v: want all acknowledged", ds)
		}
		sent[ds.Device] = ds
	}
	if batch == 1 {
		return
	}
	// Batches close when full (the wait is a minute, and no device
	// reboots) or at the end: those published again keep their bounds.
	var msgs []batchMsg
	waitFor(t, 10*time.Second, "the readings acknowledged by the new broker", func() bool {
		msgs = decodeBatches(t, c)
		return readingsIn(msgs) >= s.Acked-before.Sent
	})
	for _, m := range msgs {
		b, ds := m.b, sent[m.b.Device]
		if b.First()%uint64(batch) != 1 || len(b.Readings) != batch && b.Last() != ds.LastSeq || b.Last() > ds.LastSeq {
			t.Errorf("%s: batch %d-%d, sent up to %d: want batches of %d from seq 1 on", b.Device, b.First(), b.Last(), ds.LastSeq, batch)
		}
	}
}

// gate holds every publish of the device and gateway clients at the
// broker while held, as a broker that has stopped reading does.
type gate struct {
	mqtt.HookBase
	mu   sync.Mutex
	open chan struct{} // closed while not held
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
}

func (g *gate) ID() string { return "gate" }

func (g *gate) Provides(b byte) bool { return b == mqtt.OnPublish }

func (g *gate) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	user := string(cl.Properties.Username)
	_, device := devicecred.Parse(user)
	_, gateway := devicecred.ParseGateway(user)
	if device || gateway {
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		<-open
	}
	return pk, nil
}

// TestFleetWaitsThenSkips checks the backpressure policy: with the broker
// stalled, each device stops at MaxInflight unacknowledged publishes, owes
// up to MaxBacklog more and skips the rest; once the broker moves again,
// what was owed is published, and every due reading is either published or
// counted as skipped, with sequences gapless.
func TestFleetWaitsThenSkips(t *testing.T) {
	g := newGate()
	g.hold()
	broker := startBroker(t, g)
	c := subscribe(t, broker)
	cfg := Config{Broker: broker, Devices: 4, Rate: 200, Duration: 2 * time.Second, MaxInflight: 2, MaxBacklog: 5}
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() { errc <- f.Run(t.Context()) }()

	waitFor(t, 10*time.Second, "skipped readings", func() bool { return f.Stats().Skipped > 0 })
	// The broker reads one publish per device and stalls on it, so at most
	// MaxInflight per device are in flight and nothing is acknowledged.
	if s := f.Stats(); s.InFlight > 4*2 || s.Acked != 0 || s.Sent != s.InFlight {
		t.Errorf("stalled broker: %+v; want at most 8 in flight, none acknowledged", s)
	}
	g.release()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Stats()
	t.Logf("stats %+v", s)
	if s.Sent+s.Skipped != 400 || s.Errors != 0 || s.Acked != s.Sent {
		t.Errorf("stats %+v: want sent + skipped = 400, all sent acknowledged", s)
	}
	checkArrived(t, c, f.Sent())
}

func TestFleetReportsUnreachableBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	f, err := New(Config{Broker: "tcp://" + addr, Devices: 3, ConnectAttempts: 2, ConnectTimeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is the broker running?") || !strings.Contains(err.Error(), addr) {
		t.Errorf("Run = %v, want an error naming the broker", err)
	}
	if s := f.Stats(); s.Connected != 0 || s.Sent != 0 {
		t.Errorf("stats %+v: want nothing connected or sent", s)
	}
}

// TestFleetSaysTheBrokerRefusedMore: a fleet larger than the embedded
// broker takes from one address is told that the broker closed the
// connection, and where the bound is, not asked whether the broker runs.
func TestFleetSaysTheBrokerRefusedMore(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxConnsPerIP: 2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f, err := New(Config{Broker: b.URL(), Devices: 4, Rate: 4, ConnectAttempts: 2, ConnectTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "closed the connection before answering") || !strings.Contains(err.Error(), "--mqtt-max-per-address") {
		t.Errorf("Run = %v, want an error saying the broker closed the connection, and the demo's bound", err)
	}
	if s := f.Stats(); s.Connected > 2 {
		t.Errorf("stats %+v: more devices connected than the broker takes from one address", s)
	}
}
