package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

// TestStorageKilledUnderLoad runs `telemetry storage` as a child process,
// kills it with SIGKILL three times while readings keep arriving, each time
// starting another: nothing is lost, and nothing is counted twice, neither
// in the readings table (not even before merges) nor in the rollups.
//
// The second kill hits the worst moment on purpose: the writer reaches
// NATS through a proxy that the test freezes (nothing more from the writer
// reaches NATS, while deliveries still reach the writer), the writer
// stores a batch, and its acknowledgements are lost with it. JetStream
// delivers that batch again to the next writer, which must find it stored
// and keep it out of its insert.
func TestStorageKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it under load; skipped with -short")
	}
	const region = "us-east"
	bin := buildTelemetry(t)
	ch := testharness.ClickHouse(t)
	_, natsURL := testharness.NATS(t, region)
	js, err := jetstream.NewWithDomain(testharness.Connect(t, natsURL), region)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: storage.DefaultStream, Subjects: []string{"telemetry." + region + ".>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// A short ack wait, so that what a killed writer held comes back soon.
	args := []string{"storage", "--nats", natsURL, "--region", region, "--clickhouse", ch.Addr(),
		"--batch-size", "200", "--flush-interval", "100ms", "--ack-wait", "3s", "--log-level", "warn"}
	proxy := startFreezingProxy(t, natsURL)
	args[2] = proxy.url()
	pub := testharness.ReadingsLoad(t, js, testharness.LoadOptions{Region: region, Prefix: "kl", Devices: 5, Rate: 200,
		Metrics: []string{"temperature_c", "humidity_pct", "battery_pct"}})

	var dropped uint64 // copies the writers kept out of inserts
	var unacked uint64 // readings stored by the frozen writer, whose acknowledgements were lost
	w := startStorage(t, bin, args)
	// Each kill comes at another moment: right away, with acknowledgements
	// lost (-1), or after extra more readings stored.
	for i, extra := range []int64{0, -1, 66} {
		// Let it store a while (and take over what the last one held).
		st := w.waitStatus(t, func(st storage.Status) error {
			if st.ReadingsStored < 300 {
				return fmt.Errorf("stored %d readings, want 300", st.ReadingsStored)
			}
			if i == 2 && st.DuplicatesDropped < unacked {
				return fmt.Errorf("%d of the %d readings stored and not acknowledged before the last kill came back", st.DuplicatesDropped, unacked)
			}
			return nil
		})
		switch {
		case extra > 0:
			from := st.ReadingsStored
			st = w.waitStatus(t, func(st storage.Status) error {
				if st.ReadingsStored < from+uint64(extra) {
					return fmt.Errorf("stored %d more readings, want %d", st.ReadingsStored-from, extra)
				}
				return nil
			})
		case extra < 0:
			// Freeze, then wait for an insert: its acknowledgements are lost.
			proxy.freeze(t)
			stored := w.waitStatus(t, func(storage.Status) error { return nil }).ReadingsStored
			st = w.waitStatus(t, func(st storage.Status) error {
				if st.ReadingsStored <= stored {
					return fmt.Errorf("stored %d readings since the freeze, want more", st.ReadingsStored-stored)
				}
				return nil
			})
			unacked = st.ReadingsStored - stored
			t.Logf("kill %d: %d readings stored after NATS stopped hearing from the writer", i+1, unacked)
		}
		w.kill(t)
		dropped += st.DuplicatesDropped
		t.Logf("kill %d: the writer had stored %d readings and dropped %d copies", i+1, st.ReadingsStored, st.DuplicatesDropped)
		w = startStorage(t, bin, args)
	}
	// More load after the last kill, then the count.
	sent := pub.Sent()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if pub.Sent() < sent+400 {
			return fmt.Errorf("published %d, want %d", pub.Sent(), sent+400)
		}
		return nil
	})
	total := pub.Stop(t)
	last := pub.Last()
	want := total * 3
	testharness.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var n uint64
		qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := conn.QueryRow(qctx, "SELECT count() FROM telemetry.readings FINAL").Scan(&n); err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d rows (FINAL), want %d", n, want)
		}
		return nil
	})
	st := w.waitStatus(t, func(st storage.Status) error {
		if st.ConsumerPending != 0 {
			return fmt.Errorf("consumer pending %d", st.ConsumerPending)
		}
		return nil
	})
	dropped += st.DuplicatesDropped
	t.Logf("last writer: %+v", st)
	w.stop(t)
	t.Logf("%d readings published; the writers dropped %d redelivered copies in all", total, dropped)
	if dropped == 0 {
		t.Errorf("no redelivered copy was dropped: the frozen writer's batch did not come back")
	}

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var raw uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM telemetry.readings").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if raw != want {
		t.Errorf("%d rows without FINAL, want %d: a copy reached an insert", raw, want)
	}
	checkRollupCounts(ctx, t, conn, total)
	ledger, err := storage.Ledger(ctx, conn, storage.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ledger) != len(last) {
		t.Errorf("ledger has %d devices, want %d", len(ledger), len(last))
	}
	for _, r := range ledger {
		if n := last[r.Device]; r.MinSeq != 1 || r.MaxSeq != n || r.Readings != n || r.Missing != 0 {
			t.Errorf("ledger %+v, want seq 1..%d all stored", r, n)
		}
	}
}

// checkRollupCounts fails unless the per-minute rollups come to count each
// of total readings once per metric. It waits, as the rollups' part of an
// insert may commit just after the readings' part; a count that overshoots
// never settles.
func checkRollupCounts(ctx context.Context, t *testing.T, conn driver.Conn, total uint64) {
	t.Helper()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		rows, err := conn.Query(ctx, "SELECT metric, countMerge(n) FROM telemetry.readings_1m GROUP BY metric ORDER BY metric")
		if err != nil {
			return err
		}
		defer rows.Close()
		counts := map[string]uint64{}
		for rows.Next() {
			var m string
			var n uint64
			if err := rows.Scan(&m, &n); err != nil {
				return err
			}
			counts[m] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(counts) != 3 {
			return fmt.Errorf("rollups hold %d metrics, want 3: %v", len(counts), counts)
		}
		for m, n := range counts {
			if n != total {
				return fmt.Errorf("rollups count %d %s readings, want %d (all: %v)", n, m, total, counts)
			}
		}
		return nil
	})
}

// storageProc is one `telemetry storage` child process.
type storageProc struct {
	cmd  *exec.Cmd
	addr string
	log  string
	done chan struct{}
	once sync.Once
}

func startStorage(t *testing.T, bin string, args []string) *storageProc {
	t.Helper()
	addr := freeAddr(t)
	logf, err := os.CreateTemp(t.TempDir(), "storage-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &storageProc{addr: addr, log: logf.Name(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, append(args, "--listen", addr)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting telemetry storage: %v", err)
	}
	logf.Close()
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("telemetry storage on %s logged:\n%s", p.addr, b)
		}
	})
	return p
}

// waitStatus polls /api/status until ok(status) is nil and returns that
// status.
func (p *storageProc) waitStatus(t *testing.T, ok func(storage.Status) error) storage.Status {
	t.Helper()
	var st storage.Status
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("telemetry storage exited: %v", p.cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + p.addr + "/api/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		st = storage.Status{}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		return ok(st)
	})
	return st
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *storageProc) kill(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
}

// stop sends SIGTERM and checks that the process drains and exits 0.
func (p *storageProc) stop(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			t.Errorf("telemetry storage did not exit within 30s of SIGTERM")
			return
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("telemetry storage exited %d after SIGTERM", code)
		}
	})
}

// freezingProxy forwards TCP connections to a NATS server. freeze stops,
// for good, everything the connections open at that moment send to the
// server (it is read and dropped) after their next pull request, while the
// server's messages still reach the client; connections opened later are
// forwarded normally. Letting one pull request through makes sure the
// server has deliveries to send the frozen client: frozen between two
// fetches, a writer would get nothing more and store nothing.
type freezingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxiedConn
}

type proxiedConn struct {
	client, server net.Conn
	mu             sync.Mutex
	freezing       bool // freeze after the next pull request
	frozen         bool
	closed         bool
}

// pullRequest is in the subject of every JetStream pull request, with or
// without a domain ($JS.<domain>.API...).
var pullRequest = []byte(".API.CONSUMER.MSG.NEXT.")

func startFreezingProxy(t *testing.T, natsURL string) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := strings.TrimPrefix(natsURL, "nats://")
	p := &freezingProxy{ln: ln, target: u[strings.LastIndex(u, "@")+1:]}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.client.Close()
			c.server.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				client.Close()
				continue
			}
			c := &proxiedConn{client: client, server: server}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			wg.Add(2)
			go func() { // server to client: always
				defer wg.Done()
				_, _ = io.Copy(client, server)
				client.Close()
			}()
			go func() { // client to server: until frozen
				defer wg.Done()
				defer server.Close()
				defer func() {
					c.mu.Lock()
					c.closed = true
					c.mu.Unlock()
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := client.Read(buf)
					c.mu.Lock()
					frozen := c.frozen
					if c.freezing && bytes.Contains(buf[:n], pullRequest) {
						c.frozen = true // after this one
					}
					c.mu.Unlock()
					if n > 0 && !frozen {
						if _, werr := server.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

func (p *freezingProxy) url() string { return "nats://" + p.ln.Addr().String() }

// freeze freezes the open connections and waits until each has let its
// next pull request through: from then on the server hears nothing more
// from them.
func (p *freezingProxy) freeze(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	conns := slices.Clone(p.conns)
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.freezing = true
		c.mu.Unlock()
	}
	testharness.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		for _, c := range conns {
			c.mu.Lock()
			done := c.frozen || c.closed
			c.mu.Unlock()
			if !done {
				return errors.New("a connection has not sent its next pull request")
			}
		}
		return nil
	})
}
