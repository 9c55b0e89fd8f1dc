package dashboard

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// demoSnapshot is a snapshot as large as the demo's: three regions, three
// device types, seven metrics.
func demoSnapshot(tb testing.TB) []byte {
	tb.Helper()
	regions := []string{"us-east", "eu-west", "ap-south"}
	a := newAggregator(regions, 5*time.Second, 30*time.Second, t0)
	types := map[string][]string{
		"thermostat": {"temperature_c", "humidity_pct", "battery_pct"},
		"vibration":  {"rms_mm_s", "temperature_c", "battery_pct"},
		"tracker":    {"lat", "lon", "speed_kmh", "battery_pct"},
	}
	for i := range 750 {
		now := t0.Add(time.Duration(i) * 5 * time.Second / 750)
		for typ, names := range types {
			ms := make([]protocol.Metric, len(names))
			for j, n := range names {
				ms[j] = protocol.Metric{Name: n, Value: float64(i%97) + 0.25}
			}
			a.addReading(now, regions[i%3], typ, fmt.Sprintf("d-%d", i%30), now.UnixMilli()-40, ms)
		}
	}
	for _, r := range []string{"bad_json", "stale", "too_large"} {
		a.addDeadLetter("eu-west", r)
	}
	s := Snapshot{Seq: 1, Time: t0.Add(5 * time.Second), Domain: "us-east"}
	a.snapshot(s.Time, &s)
	for _, from := range regions {
		for _, to := range regions {
			if from != to {
				s.Replication = append(s.Replication, ReplicationLag{From: from, To: to, Messages: 12, Seconds: 0.2, Connected: true})
			}
		}
	}
	s.Storage = StorageState{State: "ok", RowsStored: 123456789, ReadingsStored: 41152263, LastInsert: "2026-11-25T21:40:00Z"}
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkHub1000Clients fans one demo-sized snapshot out to 1,000
// websocket clients over loopback, per op, until every client has read it.
// Clients run in the same process, so ns/op includes their reading; the
// server side alone is measured by TestLoadWebsocketClients.
//
//	go test -run '^$' -bench Hub1000Clients -benchmem ./dashboard
func BenchmarkHub1000Clients(b *testing.B) {
	const clients = 1000
	msg := demoSnapshot(b)
	cfg := Config{ClientQueue: DefaultClientQueue}.withDefaults()
	h := newHub(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	url := hubServer(b, h)

	var received atomic.Int64
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		c, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		resp.Body.Close()
		conns[i] = c
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				received.Add(1)
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitFor(b, 30*time.Second, func() error {
		if n := h.count(); n != clients {
			return fmt.Errorf("%d clients registered", n)
		}
		return nil
	})
	b.SetBytes(int64(len(msg)) * clients)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h.broadcast(msg)
		want := int64(i+1) * clients
		if err := poll.Until(time.Minute, 50*time.Microsecond, func() error {
			if n := received.Load(); n < want {
				return fmt.Errorf("clients read %d of %d snapshots", n, want)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(msg)), "snapshot-bytes")
	if n := h.count(); n != clients {
		b.Errorf("%d clients left of %d", n, clients)
	}
}

// TestLoadWebsocketClients holds many websocket clients on a running
// dashboard at its push cadence and reports the dashboard process's CPU and
// memory, before and while they are connected. It runs only when asked:
//
//	TELEMETRY_WS_LOAD_URL=http://127.0.0.1:18090 \
//	TELEMETRY_WS_LOAD_PID=<pid of that dashboard> \
//	[TELEMETRY_WS_LOAD_CLIENTS=1000] [TELEMETRY_WS_LOAD_SNAPSHOTS=30] \
//	go test -run TestLoadWebsocketClients -v ./dashboard
//
// Each measurement lasts TELEMETRY_WS_LOAD_SNAPSHOTS pushes, as counted by
// one more client that only observes (30 s at the default cadence). CPU and
// memory are read from /proc/<pid> (Linux only).
func TestLoadWebsocketClients(t *testing.T) {
	base := os.Getenv("TELEMETRY_WS_LOAD_URL")
	if base == "" {
		t.Skip("set TELEMETRY_WS_LOAD_URL (and TELEMETRY_WS_LOAD_PID) to load a running dashboard")
	}
	clients := envInt(t, "TELEMETRY_WS_LOAD_CLIENTS", 1000)
	pushes := int64(envInt(t, "TELEMETRY_WS_LOAD_SNAPSHOTS", 30))
	pid := envInt(t, "TELEMETRY_WS_LOAD_PID", 0)
	wsURL := "ws" + strings.TrimPrefix(strings.TrimRight(base, "/"), "http") + "/ws"

	// The observer counts the pushes that make up a measurement window.
	var observed atomic.Int64
	observer, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("observer: %v", err)
	}
	resp.Body.Close()
	defer observer.Close()
	go func() {
		for {
			if _, _, err := observer.ReadMessage(); err != nil {
				return
			}
			observed.Add(1)
		}
	}()
	measure := func(what string) {
		var cpu0 time.Duration
		if pid != 0 {
			cpu0 = procCPU(t, pid)
		}
		start, from := time.Now(), observed.Load()
		if err := poll.Until(time.Duration(pushes)*time.Minute, 10*time.Millisecond, func() error {
			if n := observed.Load() - from; n < pushes {
				return fmt.Errorf("observer got %d of %d snapshots", n, pushes)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if pid == 0 {
			return
		}
		cpu := procCPU(t, pid) - cpu0
		el := time.Since(start)
		rss, hwm := procMem(t, pid)
		t.Logf("%s: dashboard pid %d used %.2f s CPU in %.1f s (%d pushes) = %.1f%% of one core; RSS %d MiB (peak %d MiB)",
			what, pid, cpu.Seconds(), el.Seconds(), pushes, 100*cpu.Seconds()/el.Seconds(), rss>>20, hwm>>20)
	}
	measure("0 clients (and the observer)")

	type stat struct {
		n       int
		lastSeq uint64
		gaps    int
		err     error
	}
	stats := make([]stat, clients)
	conns := make([]*websocket.Conn, clients)
	var wg sync.WaitGroup
	var stop atomic.Bool
	for i := range conns {
		c, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			t.Fatalf("client %d of %d: %v (raise ulimit -n?)", i, clients, err)
		}
		resp.Body.Close()
		conns[i] = c
		wg.Add(1)
		go func(s *stat) {
			defer wg.Done()
			var snap struct {
				Seq uint64 `json:"seq"`
			}
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					if !stop.Load() {
						s.err = err
					}
					return
				}
				if json.Unmarshal(msg, &snap) == nil {
					if s.lastSeq != 0 && snap.Seq != s.lastSeq+1 {
						s.gaps++
					}
					s.lastSeq = snap.Seq
				}
				s.n++
			}
		}(&stats[i])
	}
	t.Logf("%d clients connected", clients)
	measure(fmt.Sprintf("%d clients", clients))
	stop.Store(true)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()

	minN, maxN, gaps, failed := int(^uint(0)>>1), 0, 0, 0
	for _, s := range stats {
		minN, maxN, gaps = min(minN, s.n), max(maxN, s.n), gaps+s.gaps
		if s.err != nil {
			failed++
		}
	}
	t.Logf("snapshots per client over %d pushes: min %d, max %d; skipped snapshots %d; clients dropped %d", pushes, minN, maxN, gaps, failed)
	if failed > 0 || gaps > 0 {
		t.Errorf("%d clients dropped and %d snapshots skipped under load", failed, gaps)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return n
}

// procCPU is the user plus system CPU time of pid so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading CPU time of %d: %v", pid, err)
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// procMem is the resident and peak resident memory of pid, in bytes.
func procMem(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading memory of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}
