package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// The two cores of BenchmarkIngestOnItsOwnCore: the load (the simulator in
// this process, and Mosquitto) on one, the consumer (a plain subscriber, or
// ingest and the region's JetStream server) on the other.
const (
	loadCPU     = 0
	consumerCPU = 1
)

// childRole is the environment variable that turns this test binary into
// one of the benchmark's child processes (TestMain).
const childRole = "E2E_BENCH_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childRole); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pin keeps every thread of process pid on cpu. Threads started later
// inherit it from the thread that starts them.
func pin(pid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return setAffinity(pid, &set)
}

// setAffinity sets the CPUs every thread of process pid may run on.
func setAffinity(pid int, set *unix.CPUSet) error {
	// Twice: a thread started during the first pass by a thread not yet
	// pinned is caught by the second.
	for range 2 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return fmt.Errorf("pinning %d: %w", pid, err)
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pinning thread %d of %d: %w", tid, pid, err)
			}
		}
	}
	return nil
}

// runChild runs one of the benchmark's child processes, pinned to the
// consumer's core, until it is done or its standard input closes.
func runChild(role string) error {
	if err := pin(os.Getpid(), consumerCPU); err != nil {
		return err
	}
	switch role {
	case "subscriber":
		return runSubscriberChild()
	case "nats":
		return runNATSChild()
	}
	return fmt.Errorf("unknown role %q", role)
}

// runSubscriberChild subscribes to the fault region's readings as a plain
// QoS 1 subscriber that acknowledges at once and prints "subscribed". It
// then reads from its standard input how many messages to expect, and once
// they have arrived prints "done <first> <last>" (unix nanoseconds of the
// first and the last) and returns.
func runSubscriberChild() error {
	sub, err := startCeilingSubscriber(os.Getenv("E2E_BENCH_BROKER"), os.Getenv("E2E_BENCH_CLIENT_ID"))
	if err != nil {
		return err
	}
	defer sub.stop()
	fmt.Println("subscribed")
	stdin := bufio.NewReader(os.Stdin)
	line, err := stdin.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the count: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return fmt.Errorf("the count %q: %w", line, err)
	}
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, stdin); close(closed) }()
	for {
		got, first, last := sub.stats()
		if got >= n {
			fmt.Println("done", first.UnixNano(), last.UnixNano())
			return nil
		}
		select {
		case <-sub.arrived:
		case <-closed:
			return fmt.Errorf("stopped after %d of %d messages", got, n)
		}
	}
}

// runNATSChild runs the fault region's JetStream server on port
// E2E_BENCH_PORT with its store in E2E_BENCH_STORE, prints "ready", and
// runs until its standard input closes.
func runNATSChild() error {
	port, err := strconv.Atoi(os.Getenv("E2E_BENCH_PORT"))
	if err != nil {
		return fmt.Errorf("E2E_BENCH_PORT: %w", err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: faultRegion, Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: faultRegion, StoreDir: os.Getenv("E2E_BENCH_STORE"), MaxPayload: 1 << 20,
	})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("not ready after 30s")
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// startChild starts this test binary in role with env, and waits for its
// first line of output, which must be want.
func startChild(b *testing.B, role, want string, env ...string) *testharness.Child {
	b.Helper()
	c := testharness.StartChild(b, role, append([]string{childRole + "=" + role}, env...)...)
	if got := c.Line(b); got != want {
		b.Fatalf("%s said %q, want %q", role, got, want)
	}
	return c
}

// BenchmarkIngestOnItsOwnCore asks the question of
// BenchmarkIngestShareOfBrokerCeiling without letting the two arms compete
// for the same two cores. The load (the simulator in this process, and
// Mosquitto) is pinned to CPU 0 and the consumer to CPU 1: in the ceiling
// arm a plain subscriber that acknowledges at once (paho, a
// child process), in the bridge arm `telemetry ingest` and the region's
// JetStream server (another child process). The bridge then reaches the
// ceiling exactly when ingest and JetStream together keep up on one core;
// it reports the share, and how much of CPU 1 ingest and JetStream used.
// N is INGEST_BENCH_N (default 60000); INGEST_BENCH_BIN as for the other.
//
//	go test -run '^$' -bench IngestOnItsOwnCore -benchtime 1x ./e2e/
func BenchmarkIngestOnItsOwnCore(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs: one for the load, one for the consumer")
	}
	// Open: the benchmark's fleets change their id prefixes; the ACL is
	// tested elsewhere.
	mosq := testharness.MosquittoBrokerWith(b, testharness.MosquittoOptions{Open: true})
	if err := pin(mosq.Pid(), loadCPU); err != nil {
		b.Fatal(err)
	}
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	if err := pin(os.Getpid(), loadCPU); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = setAffinity(os.Getpid(), &all) })
	bin := benchBinary(b)
	fleetCfg := benchFleet(b, mosq)
	for i := 0; i < b.N; i++ {
		others0 := othersCPU(b, mosq)
		ceilingBefore, sent := pinnedCeiling(b, mosq, fleetCfg(fmt.Sprintf("pceiling-%d-a-", i)), fmt.Sprintf("pinned-ceiling-%d-a", i))
		others1 := othersCPU(b, mosq)
		bridge, ingestCores, natsCores, cpuPer, sentBridge := pinnedBridge(b, bin, mosq, fleetCfg(fmt.Sprintf("pbridge-%d-", i)), i)
		othersCeiling, othersBridge := others1.per(others0, sent), othersCPU(b, mosq).per(others1, sentBridge)
		ceilingAfter, _ := pinnedCeiling(b, mosq, fleetCfg(fmt.Sprintf("pceiling-%d-b-", i)), fmt.Sprintf("pinned-ceiling-%d-b", i))
		ceiling := (ceilingBefore + ceilingAfter) / 2

		b.ReportMetric(ceiling, "ceiling-readings/s")
		b.ReportMetric(bridge, "bridge-readings/s")
		b.ReportMetric(100*bridge/ceiling, "%-of-ceiling")
		b.ReportMetric(cpuPer, "ingest-cpu-µs/reading")
		b.ReportMetric(ingestCores, "ingest-cores")
		b.ReportMetric(natsCores, "jetstream-cores")
		b.Logf("load on CPU %d, consumer on CPU %d: ceiling %.0f/s (%.0f before the bridge, %.0f after), bridge into JetStream %.0f/s = %.0f %% of it; of CPU %d, ingest used %.2f and JetStream %.2f; ingest %.1f µs per reading",
			loadCPU, consumerCPU, ceiling, ceilingBefore, ceilingAfter, bridge, 100*bridge/ceiling, consumerCPU, ingestCores, natsCores, cpuPer)
		b.Logf("CPU µs per reading on CPU %d: Mosquitto %.1f with the plain subscriber, %.1f with ingest; the simulator %.1f, %.1f",
			loadCPU, othersCeiling.broker, othersBridge.broker, othersCeiling.self, othersBridge.self)
	}
}

// pinnedCeiling runs the simulator with cfg through mosq to the plain
// subscriber child and returns the readings per second it received, and
// how many were sent.
func pinnedCeiling(b *testing.B, mosq *testharness.Broker, cfg devices.Config, clientID string) (float64, uint64) {
	b.Helper()
	sub := startChild(b, "subscriber", "subscribed", "E2E_BENCH_BROKER="+mosq.URL(), "E2E_BENCH_CLIENT_ID="+clientID)
	fleet, done := runFleet(b, cfg)
	waitFor(b, done, "devices")
	sent := fleet.Stats().Acked
	if _, err := fmt.Fprintln(sub.Stdin, sent); err != nil {
		b.Fatalf("telling the subscriber how many to expect: %v", err)
	}
	f := strings.Fields(sub.Line(b))
	if len(f) != 3 || f[0] != "done" {
		b.Fatalf("subscriber said %q, want done <first> <last>", strings.Join(f, " "))
	}
	first, err1 := strconv.ParseInt(f[1], 10, 64)
	last, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || last <= first {
		b.Fatalf("subscriber said %q", strings.Join(f, " "))
	}
	sub.Stop()
	return float64(sent) / time.Duration(last-first).Seconds(), sent
}

// pinnedBridge runs the simulator with cfg through mosq and ingest (on the
// consumer's core) into the JetStream server child, and returns the
// readings per second stored, the cores ingest and JetStream used
// meanwhile, ingest's CPU per reading, and how many readings were sent.
func pinnedBridge(b *testing.B, bin string, mosq *testharness.Broker, cfg devices.Config, i int) (rate, ingestCores, natsCores, cpuPer float64, sent uint64) {
	b.Helper()
	_, port, _ := strings.Cut(freeAddr(b), ":")
	store := filepath.Join(b.TempDir(), "jetstream")
	natsChild := startChild(b, "nats", "ready", "E2E_BENCH_PORT="+port, "E2E_BENCH_STORE="+store)
	url := "nats://127.0.0.1:" + port
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stream.ApplyRegion(ctx, url, faultRegion, stream.DefaultTopology([]string{faultRegion})); err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.NewWithDomain(testharness.Connect(b, url), faultRegion)
	if err != nil {
		b.Fatal(err)
	}
	in := newIngestProc(b, bin, mosq.URL(), url, "--client-id", fmt.Sprintf("pinned-ingest-%d", i))
	in.Start()
	if err := pin(in.Pid(), consumerCPU); err != nil {
		b.Fatal(err)
	}
	natsPid := natsChild.Pid()
	in0, err1 := procCPU(in.Pid())
	nats0, err2 := procCPU(natsPid)
	if err1 != nil || err2 != nil {
		b.Fatal(err1, err2)
	}
	fleet, done := runFleet(b, cfg)
	first, last := timeStored(b, js, fleet, done)
	in1, err1 := procCPU(in.Pid())
	nats1, err2 := procCPU(natsPid)
	if err1 != nil || err2 != nil {
		b.Fatal(err1, err2)
	}
	in.Kill()
	natsChild.Stop()
	sent = fleet.Stats().Acked
	elapsed := last.Sub(first).Seconds()
	return float64(sent) / elapsed, (in1 - in0).Seconds() / elapsed, (nats1 - nats0).Seconds() / elapsed, float64((in1 - in0).Microseconds()) / float64(sent), sent
}
