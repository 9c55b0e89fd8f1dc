package e2e

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// The tests here run `telemetry ingest` as a child process, so that it can
// be killed with SIGKILL and its memory and CPU measured on their own.

const faultRegion = "us-east"

// buildTelemetry builds the telemetry binary into a temporary directory.
func buildTelemetry(t testing.TB) string { return goBuild(t, "./cmd/telemetry", "telemetry") }

// goBuild builds pkg, of this module or one it requires (at the version
// go.mod requires), into a temporary directory as name.
func goBuild(t testing.TB, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = testharness.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ingestProc is `telemetry ingest` running as a child process.
type ingestProc struct {
	t      testing.TB
	bin    string
	args   []string
	listen string
	log    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newIngestProc(t testing.TB, bin, broker, natsURL string, extra ...string) *ingestProc {
	p := &ingestProc{t: t, bin: bin, listen: freeAddr(t), log: filepath.Join(t.TempDir(), "ingest.log")}
	p.args = append([]string{"ingest", "--region", faultRegion, "--broker", broker, "--nats", natsURL,
		"--listen", p.listen, "--instance", "1", "--log-level", "warn"}, extra...)
	t.Cleanup(p.Kill)
	return p
}

// Start starts the process and waits until /healthz says both connections
// are up.
func (p *ingestProc) Start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting telemetry ingest: %v", err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	testharness.CheckFor(p.t, 60*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-done:
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("telemetry ingest exited: %s", b)
		default:
		}
		resp, err := http.Get("http://" + p.listen + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *ingestProc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Freeze stops the process (SIGSTOP) without ending it: its connections
// stay open and nothing on them is answered.
func (p *ingestProc) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Pid is the running process's id.
func (p *ingestProc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// procStatus reads a "Name: value kB" field of /proc/pid/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procCPU is the user+system CPU time pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (100 per second on Linux).
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

// cpuSplit is CPU time of the broker and of this process (the simulator,
// and the plain subscriber or the region's JetStream server).
type cpuSplit struct{ broker, self float64 }

func othersCPU(t testing.TB, mosq *testharness.Broker) cpuSplit {
	broker, err1 := procCPU(mosq.Pid())
	self, err2 := procCPU(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return cpuSplit{float64(broker.Microseconds()), float64(self.Microseconds())}
}

// per is the CPU time since start per reading, in µs.
func (c cpuSplit) per(start cpuSplit, readings uint64) cpuSplit {
	n := float64(readings)
	return cpuSplit{(c.broker - start.broker) / n, (c.self - start.self) / n}
}

// procSyscalls is how many read and write system calls (syscr + syscw of
// /proc/pid/io) the process has made.
func procSyscalls(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	var n int64
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			c, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/io: %q", pid, line)
			}
			n += c
		}
	}
	return n, nil
}

// regionNATS is the region's JetStream server, in-process on a fixed port
// and store, so that it can be shut down and started again as the same
// server: a full outage of the region's NATS.
type regionNATS struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

func startRegionNATS(t testing.TB) *regionNATS {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	p, _ := strconv.Atoi(port)
	n := &regionNATS{t: t, opts: server.Options{
		ServerName: faultRegion, Host: "127.0.0.1", Port: p, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: faultRegion, StoreDir: t.TempDir(), MaxPayload: 1 << 20,
	}}
	n.Start()
	t.Cleanup(n.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A reading JetStream stored as the server stopped, unacknowledged, is
	// published again once it is back: a window longer than the 30 s
	// outage of TestRegionNATSDownUnderLoad collapses that copy in
	// READINGS, which its check of READINGS needs. With the default window
	// (30 s) ClickHouse would collapse it (stream.DefaultDuplicateWindow).
	topo := stream.DefaultTopology([]string{faultRegion})
	topo.DuplicateWindow = 2 * time.Minute
	if err := stream.ApplyRegion(ctx, n.URL(), faultRegion, topo); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *regionNATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

func (n *regionNATS) Start() {
	n.t.Helper()
	opts := n.opts
	s, err := server.NewServer(&opts)
	if err != nil {
		n.t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		n.t.Fatal("nats-server not ready after 30s")
	}
	n.srv = s
}

func (n *regionNATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// runFleet runs the simulator against broker in the fault region and
// returns the fleet once it has published everything.
func runFleet(t testing.TB, cfg devices.Config) (*devices.Fleet, <-chan error) {
	t.Helper()
	cfg.Regions = []string{faultRegion}
	f, err := devices.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
		f.Close()
	})
	return f, done
}

// sentIDs is the identity of every reading the fleet published; it fails
// the test if the broker did not acknowledge all of them.
func sentIDs(t testing.TB, f *devices.Fleet) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, d := range f.Sent() {
		if d.Acked != d.LastSeq {
			t.Fatalf("device %s: broker acknowledged up to seq %d of %d", d.Device, d.Acked, d.LastSeq)
		}
		for seq := d.FirstSeq; seq <= d.LastSeq && d.LastSeq > 0; seq++ {
			ids[fmt.Sprintf("%s:%d:%d", d.Device, d.Boot, seq)] = true
		}
	}
	return ids
}

func readingsCount(js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream.ReadingsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// checkFleetStoredOnce waits for the fleet to finish, then fails unless
// the region's READINGS holds each reading the fleet sent exactly once and
// nothing else. It returns how many readings that is.
func checkFleetStoredOnce(t testing.TB, regionURL string, fleet *devices.Fleet, done <-chan error) int {
	t.Helper()
	waitFor(t, done, "devices")
	return checkStoredOnceIn(t, regionURL, faultRegion, fleet)
}

// checkStoredOnceIn is checkFleetStoredOnce for a fleet that has stopped,
// in region's READINGS.
func checkStoredOnceIn(t testing.TB, regionURL, region string, fleet *devices.Fleet) int {
	t.Helper()
	js, err := jetstream.NewWithDomain(testharness.Connect(t, regionURL), region)
	if err != nil {
		t.Fatal(err)
	}
	want := sentIDs(t, fleet)
	testharness.CheckFor(t, 120*time.Second, 100*time.Millisecond, func() error {
		n, err := readingsCount(js)
		if err != nil {
			return err
		}
		if n < uint64(len(want)) {
			return fmt.Errorf("READINGS of %s holds %d of %d readings", region, n, len(want))
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	total, _ := readingsCount(js)
	// A region's cluster may still be electing its JetStream leader.
	var c jetstream.Consumer
	testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var err error
		c, err = js.OrderedConsumer(ctx, stream.ReadingsStream, jetstream.OrderedConsumerConfig{})
		return err
	})
	got := map[string]int{}
	read := uint64(0)
	for read < total {
		// Not answered (a cluster's leader moving) is worth another try:
		// the ordered consumer goes on after the last message it gave.
		transient := func(err error) bool { return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) }
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil && !transient(err) {
			t.Fatal(err)
		}
		if err == nil {
			for m := range batch.Messages() {
				got[m.Headers().Get(jetstream.MsgIDHeader)]++
				read++
			}
			if err := batch.Error(); err != nil && !transient(err) {
				t.Fatal(err)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages of READINGS", read, total)
		}
	}
	testharness.CheckExactlyOnce(t, "READINGS of "+region, want, got)
	return len(want)
}

func waitFor(t testing.TB, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("%s did not finish within 3 minutes", what)
	}
}

// metricValue scrapes the first series of name from a /metrics endpoint.
func metricValue(listen, name string) (float64, error) {
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		// name value, or name{labels} value; labels hold no spaces here.
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// TestIngestKilledUnderLoadLosesNothing kills `telemetry ingest` with
// SIGKILL while devices publish, starts it again, and checks that READINGS
// ends up with exactly the readings sent.
func TestIngestKilledUnderLoadLosesNothing(t *testing.T) {
	for _, b := range faultBrokers {
		t.Run(b.name, func(t *testing.T) { ingestKilledUnderLoad(t, b.start(t)) })
	}
}

func ingestKilledUnderLoad(t *testing.T, b faultBroker) {
	brokerURL := b.url
	region := startRegionNATS(t)
	bin := buildTelemetry(t)
	in := newIngestProc(t, bin, brokerURL, region.URL())
	in.Start()

	fleet, done := runFleet(t, devices.Config{Broker: brokerURL, Devices: 40, Rate: 2000, Duration: 8 * time.Second})
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < 4000 {
			return fmt.Errorf("%d readings published", s.Acked)
		}
		return nil
	})
	// Killed between two messages, ingest would leave the broker nothing
	// to send again (the check below): frozen first, it takes messages it
	// cannot acknowledge while the devices go on.
	in.Freeze()
	frozenAt := fleet.Stats().Acked
	testharness.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < frozenAt+100 {
			return fmt.Errorf("%d readings published since ingest froze", s.Acked-frozenAt)
		}
		return nil
	})
	in.Kill()
	killedAt := fleet.Stats().Acked
	t.Logf("killed ingest after %d readings were published", killedAt)
	// Readings keep arriving while ingest is dead: a second's worth, or
	// as many as the embedded broker takes before it holds the devices
	// back (ingest's session has as many unacknowledged as its flow hook
	// allows).
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < killedAt+2000 && (b.holding == nil || !b.holding()) {
			return fmt.Errorf("%d readings published since the kill, and the broker holds no device back", s.Acked-killedAt)
		}
		return nil
	})
	in.Start()
	n := checkFleetStoredOnce(t, region.URL(), fleet, done)
	dups, err1 := metricValue(in.listen, "telemetry_ingest_duplicates_total")
	redelivered, err2 := metricValue(in.listen, "telemetry_ingest_redelivered_total")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// Killed under load, ingest had messages in flight: the broker must
	// have sent some again, or the test did not exercise redelivery.
	if redelivered == 0 {
		t.Errorf("after the restart ingest saw nothing redelivered (%v duplicates): the kill found nothing in flight", dups)
	}
	t.Logf("%d readings, all in READINGS once; after the restart ingest saw %v redelivered and collapsed %v duplicates", n, redelivered, dups)
}

// TestRegionNATSDownUnderLoad stops the region's NATS for 30 s while devices
// publish: ingest stops taking messages (the broker holds them), its memory
// stays flat, and once NATS is back every reading arrives exactly once.
func TestRegionNATSDownUnderLoad(t *testing.T) {
	for _, b := range faultBrokers {
		t.Run(b.name, func(t *testing.T) { regionNATSDownUnderLoad(t, b.start(t)) })
	}
}

func regionNATSDownUnderLoad(t *testing.T, b faultBroker) {
	brokerURL := b.url
	region := startRegionNATS(t)
	bin := buildTelemetry(t)
	in := newIngestProc(t, bin, brokerURL, region.URL())
	in.Start()

	const outage = 30 * time.Second
	fleet, done := runFleet(t, devices.Config{Broker: brokerURL, Devices: 40, Rate: 1000, Duration: outage + 10*time.Second})
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < 3000 {
			return fmt.Errorf("%d readings published", s.Acked)
		}
		return nil
	})
	pid := in.Pid()
	rssBefore, err := procStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	region.Stop()
	start := time.Now()
	var rssMax, heapMax int64
	var rssMid int64 // a third into the outage, once the pipeline is full
	// The outage lasts outage: sample memory through it.
	sample := time.NewTicker(250 * time.Millisecond)
	defer sample.Stop()
	for ; time.Since(start) < outage; <-sample.C {
		rss, err := procStatus(pid, "VmRSS")
		if err != nil {
			t.Fatal(err)
		}
		rssMax = max(rssMax, rss)
		if rssMid == 0 && time.Since(start) > outage/3 {
			rssMid = rss
		}
		if h, err := metricValue(in.listen, "go_memstats_heap_inuse_bytes"); err == nil {
			heapMax = max(heapMax, int64(h))
		}
	}
	rssEnd, _ := procStatus(pid, "VmRSS")
	published := fleet.Stats().Acked
	region.Start()
	t.Logf("NATS down %s while %d readings were published: ingest RSS %.1f MiB before, %.1f MiB a third in, %.1f MiB at the end, max %.1f MiB; Go heap in use max %.1f MiB",
		outage, published, mib(rssBefore), mib(rssMid), mib(rssEnd), mib(rssMax), mib(heapMax))
	// Bounded: after the pipeline filled up, memory does not grow with the
	// readings piling up in the broker (about 20,000 here, some 10 MiB as
	// Go objects if ingest buffered them).
	if growth := rssMax - rssMid; growth > 8<<20 {
		t.Errorf("ingest RSS grew by %.1f MiB during the outage after the pipeline filled", mib(growth))
	}

	n := checkFleetStoredOnce(t, region.URL(), fleet, done)
	t.Logf("%d readings, all in READINGS once after NATS returned", n)
}

// saveProfile fetches /debug/pprof/<what> from ingest into a new file named
// by pattern (as os.CreateTemp).
func saveProfile(t testing.TB, in *ingestProc, what, pattern string) {
	resp, err := http.Get("http://" + in.listen + "/debug/pprof/" + what)
	if err != nil {
		t.Errorf("profiling ingest: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	var f *os.File
	if err == nil {
		f, err = os.CreateTemp(filepath.Dir(pattern), filepath.Base(pattern))
	}
	if err == nil {
		_, err = f.Write(b)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("profiling ingest: %v", err)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// measureCeiling runs the simulator with cfg through mosq to a plain QoS 1
// subscriber that acknowledges each message at once: the broker's own
// ceiling. The subscriber is paho with its defaults, as ingest's client is
// paho too, without ingest's batched writes. It returns the readings per
// second the subscriber received, how many were sent, and the CPU per
// reading of the broker and of this process.
func measureCeiling(b *testing.B, mosq *testharness.Broker, cfg devices.Config, clientID string) (rate float64, sent int64, others cpuSplit) {
	b.Helper()
	sub, err := startCeilingSubscriber(mosq.URL(), clientID)
	if err != nil {
		b.Fatalf("ceiling subscriber: %v", err)
	}
	defer sub.stop()
	others0 := othersCPU(b, mosq)
	fleet, done := runFleet(b, cfg)
	waitFor(b, done, "devices")
	sent = int64(fleet.Stats().Acked)
	testharness.CheckFor(b, 120*time.Second, 20*time.Millisecond, func() error {
		if got, _, _ := sub.stats(); got < sent {
			return fmt.Errorf("ceiling subscriber got %d of %d", got, sent)
		}
		return nil
	})
	others = othersCPU(b, mosq).per(others0, uint64(sent))
	_, first, last := sub.stats()
	return float64(sent) / last.Sub(first).Seconds(), sent, others
}

// ceilingSubscriber is the plain QoS 1 subscriber of the benchmarks'
// ceiling arms: paho acknowledges each reading of the fault region as soon
// as the handler returns, and the handler notes when the first and the last
// arrived.
type ceilingSubscriber struct {
	client  paho.Client
	arrived chan struct{} // a token after each message, for a waiter

	mu          sync.Mutex
	got         int64
	first, last time.Time
}

// startCeilingSubscriber connects to broker as clientID and returns once
// the broker has granted the subscription.
func startCeilingSubscriber(broker, clientID string) (*ceilingSubscriber, error) {
	s := &ceilingSubscriber{arrived: make(chan struct{}, 1)}
	s.client = paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword).
		SetCleanSession(true).SetConnectTimeout(time.Minute))
	if tok := s.client.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		return nil, fmt.Errorf("connecting to %s: %v", broker, tok.Error())
	}
	filter := "telemetry/" + faultRegion + "/#"
	tok := s.client.Subscribe(filter, 1, s.take)
	if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		s.stop()
		return nil, fmt.Errorf("subscribing to %s: no SUBACK within a minute (%v)", filter, tok.Error())
	}
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code > 2 {
		s.stop()
		return nil, fmt.Errorf("subscribing to %s: refused (%#x)", filter, code)
	}
	return s, nil
}

func (s *ceilingSubscriber) take(_ paho.Client, _ paho.Message) {
	now := time.Now()
	s.mu.Lock()
	if s.got == 0 {
		s.first = now
	}
	s.got++
	s.last = now
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

// stats returns how many readings arrived, and when the first and the last.
func (s *ceilingSubscriber) stats() (got int64, first, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got, s.first, s.last
}

func (s *ceilingSubscriber) stop() { s.client.Disconnect(250) }

// benchBinary is the telemetry binary the benchmarks run: INGEST_BENCH_BIN,
// or the tree's, built.
func benchBinary(b *testing.B) string {
	if bin := os.Getenv("INGEST_BENCH_BIN"); bin != "" {
		return bin
	}
	return buildTelemetry(b)
}

// benchFleet returns the simulator's configuration for one arm of a
// benchmark through mosq, given its device id prefix: INGEST_BENCH_N
// readings (default 60000), asked for at more than the broker can take, so
// that the devices publish as fast as their in-flight windows allow.
// faultBrokers are the brokers the fault tests run against: real
// Mosquitto from the repository's configuration with runFleet's devices
// in its password file, and the embedded broker of the demo, whose auth
// hook checks the same per-device passwords. Each starts its broker and
// returns its URL.
var faultBrokers = []struct {
	name  string
	start func(t *testing.T) faultBroker
}{
	{"mosquitto", func(t *testing.T) faultBroker {
		return faultBroker{url: mosquittoFor(t, devices.Config{Devices: 40, Regions: []string{faultRegion}}).URL()} // runFleet's
	}},
	{"embedded", func(t *testing.T) faultBroker {
		b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return faultBroker{url: b.URL(), holding: func() bool { return b.PublishersHeld() > 0 }}
	}},
}

// faultBroker is a started broker of faultBrokers: its URL, and for the
// embedded broker whether it holds devices back because ingest is behind
// (Mosquitto queues instead).
type faultBroker struct {
	url     string
	holding func() bool
}

// mosquittoFor starts real Mosquitto from the repository's configuration,
// with every device of the fleets cfgs would make in its password file, as
// `telemetry mqtt passwd` writes them.
func mosquittoFor(t testing.TB, cfgs ...devices.Config) *testharness.Broker {
	t.Helper()
	var users []string
	for _, cfg := range cfgs {
		u, err := devices.Usernames(cfg)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u...)
	}
	return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Devices: users})
}

func benchFleet(b *testing.B, mosq *testharness.Broker) func(prefix string) devices.Config {
	n := 60000
	if s := os.Getenv("INGEST_BENCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("INGEST_BENCH_N: %v", err)
		}
		n = v
	}
	return func(prefix string) devices.Config {
		const rate = 40000
		return devices.Config{Broker: mosq.URL(), Devices: 100, Rate: rate, Duration: time.Duration(float64(n) / rate * float64(time.Second)), IDPrefix: prefix}
	}
}

// timeStored waits until READINGS in js holds everything fleet sent (it is
// done when done yields) and returns when the first and the last were
// seen there, polling every 10 ms.
func timeStored(b *testing.B, js jetstream.JetStream, fleet *devices.Fleet, done <-chan error) (first, last time.Time) {
	b.Helper()
	testharness.CheckFor(b, 5*time.Minute, 10*time.Millisecond, func() error {
		c, err := readingsCount(js)
		if err != nil {
			b.Fatal(err)
		}
		if c > 0 && first.IsZero() {
			first = time.Now()
		}
		select {
		case err := <-done:
			if err != nil {
				b.Fatal(err)
			}
			done = nil
		default:
		}
		if done == nil && c >= fleet.Stats().Acked {
			last = time.Now()
			return nil
		}
		return fmt.Errorf("READINGS holds %d of %d", c, fleet.Stats().Acked)
	})
	return first, last
}

// BenchmarkIngestShareOfBrokerCeiling measures, in one run on one machine,
// the broker's own QoS 1 ceiling (the simulator publishing N readings
// through Mosquitto to a plain subscriber that acknowledges at once),
// before and after the bridge's throughput (the same N through Mosquitto and
// `telemetry ingest` into JetStream), and reports the bridge's share of the
// mean of the two ceilings and its CPU time per reading. N is INGEST_BENCH_N (default 60000). With
// INGEST_BENCH_PROFILE set to a directory, ingest runs with --pprof and each
// bridge arm leaves there a CPU profile of its first INGEST_BENCH_PROFILE_SECONDS
// (default 3) under load, ingest-cpu-*.pprof, and the allocations since
// ingest started, ingest-allocs-*.pprof, for `go tool pprof`. INGEST_BENCH_BIN
// runs that telemetry binary instead of building the tree's: on a noisy
// machine, two versions run in turn compare better than two series.
//
//	go test -run '^$' -bench IngestShareOfBrokerCeiling -benchtime 1x ./e2e/
func BenchmarkIngestShareOfBrokerCeiling(b *testing.B) {
	// Open: the fleets' id prefixes change per arm; the benchmark measures
	// throughput, the ACL is tested elsewhere.
	mosq := testharness.MosquittoBrokerWith(b, testharness.MosquittoOptions{Open: true})
	bin := benchBinary(b)
	fleetCfg := benchFleet(b, mosq)
	for i := 0; i < b.N; i++ {
		// The ceiling is measured before and after the bridge, and the
		// bridge compared with their mean: the machine's speed drifts by
		// up to a third over minutes, and bracketing cancels the part of
		// the drift that is steady over the three arms.
		ceilingBefore, sent, othersCeiling := measureCeiling(b, mosq, fleetCfg(fmt.Sprintf("ceiling-%d-a-", i)), fmt.Sprintf("bench-ceiling-%d-a", i))

		// Bridge: ingest into JetStream.
		region := startRegionNATS(b)
		js, err := jetstream.NewWithDomain(testharness.Connect(b, region.URL()), faultRegion)
		if err != nil {
			b.Fatal(err)
		}
		profDir := os.Getenv("INGEST_BENCH_PROFILE")
		args := []string{"--client-id", fmt.Sprintf("bench-ingest-%d", i)}
		if profDir != "" {
			args = append(args, "--pprof")
		}
		in := newIngestProc(b, bin, mosq.URL(), region.URL(), args...)
		in.Start()
		profiled := make(chan struct{})
		if profDir != "" {
			go func() {
				defer close(profiled)
				secs := cmp.Or(os.Getenv("INGEST_BENCH_PROFILE_SECONDS"), "3")
				saveProfile(b, in, "profile?seconds="+secs, filepath.Join(profDir, "ingest-cpu-*.pprof"))
			}()
		} else {
			close(profiled)
		}
		cpu0, err := procCPU(in.Pid())
		if err != nil {
			b.Fatal(err)
		}
		sys0, err := procSyscalls(in.Pid())
		if err != nil {
			b.Fatal(err)
		}
		others0 := othersCPU(b, mosq)
		fleet, done := runFleet(b, fleetCfg(fmt.Sprintf("bridge-%d-", i)))
		first, last := timeStored(b, js, fleet, done)
		cpu1, _ := procCPU(in.Pid())
		sys1, _ := procSyscalls(in.Pid())
		othersBridge := othersCPU(b, mosq).per(others0, fleet.Stats().Acked)
		<-profiled
		if profDir != "" {
			saveProfile(b, in, "allocs", filepath.Join(profDir, "ingest-allocs-*.pprof"))
		}
		sentBridge := fleet.Stats().Acked
		bridge := float64(sentBridge) / last.Sub(first).Seconds()
		cpuPer := float64((cpu1 - cpu0).Microseconds()) / float64(sentBridge)
		in.Kill()
		region.Stop()
		ceilingAfter, _, _ := measureCeiling(b, mosq, fleetCfg(fmt.Sprintf("ceiling-%d-b-", i)), fmt.Sprintf("bench-ceiling-%d-b", i))
		ceiling := (ceilingBefore + ceilingAfter) / 2

		b.ReportMetric(ceiling, "ceiling-readings/s")
		b.ReportMetric(bridge, "bridge-readings/s")
		b.ReportMetric(100*bridge/ceiling, "%-of-ceiling")
		b.ReportMetric(cpuPer, "ingest-cpu-µs/reading")
		b.ReportMetric(float64(sys1-sys0)/float64(sentBridge), "ingest-syscalls/reading")
		// How much of its one thread (GOMAXPROCS=1) ingest kept busy: far
		// below 1, ingest was not what limited the bridge.
		b.ReportMetric(cpuPer*bridge/1e6, "ingest-cores")
		b.Logf("%d readings: broker QoS 1 ceiling %.0f/s (%.0f before the bridge, %.0f after), bridge into JetStream %.0f/s = %.0f %% of it; ingest used %.1f µs CPU and %.2f reads and writes per reading",
			sent, ceiling, ceilingBefore, ceilingAfter, bridge, 100*bridge/ceiling, cpuPer, float64(sys1-sys0)/float64(sentBridge))
		b.Logf("CPU µs per reading besides ingest: Mosquitto %.1f with the plain subscriber, %.1f with ingest; this process (simulator and plain subscriber, or simulator and JetStream) %.1f, %.1f",
			othersCeiling.broker, othersBridge.broker, othersCeiling.self, othersBridge.self)
	}
}
