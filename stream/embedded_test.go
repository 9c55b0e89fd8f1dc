package stream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/poll"
)

func startTestRegions(t testing.TB) *Embedded {
	t.Helper()
	e, err := StartEmbedded(EmbeddedConfig{Regions: DefaultRegions, DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Apply(ctx, DefaultTopology(DefaultRegions)); err != nil {
		t.Fatal(err)
	}
	return e
}

// readingsInfo is READINGS' info in the region js is of.
func readingsInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, ReadingsStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// checkFor polls f until it returns nil or the deadline passes.
func checkFor(t *testing.T, total, every time.Duration, f func() error) {
	t.Helper()
	if err := poll.Until(total, every, f); err != nil {
		t.Fatal(err)
	}
}

func TestEveryRegionHoldsEveryReading(t *testing.T) {
	e := startTestRegions(t)
	ctx := context.Background()
	const perRegion = 500
	js := map[string]jetstream.JetStream{}
	for _, r := range e.Regions() {
		nc, err := nats.Connect(e.URL(r))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js[r], err = jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= perRegion; i++ {
			msg := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.probe.p-%d", r, i%7), Data: []byte("{}"), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-p-%d:1:%d", r, i%7, i))
			if _, err := js[r].PublishMsgAsync(msg); err != nil {
				t.Fatal(err)
			}
		}
		// A re-sent reading is collapsed by its message id.
		dup := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.probe.p-1", r), Data: []byte("{}"), Header: nats.Header{}}
		dup.Header.Set(jetstream.MsgIDHeader, r+"-p-1:1:1")
		if _, err := js[r].PublishMsgAsync(dup); err != nil {
			t.Fatal(err)
		}
		select {
		case <-js[r].PublishAsyncComplete():
		case <-time.After(10 * time.Second):
			t.Fatal("publishes not acknowledged")
		}
	}
	want := uint64(perRegion * len(e.Regions()))
	for _, r := range e.Regions() {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			info, err := readingsInfo(ctx, js[r])
			if err != nil {
				return err
			}
			if info.State.Msgs != want {
				var src string
				for _, si := range info.Sources {
					src += fmt.Sprintf(" [%s lag=%d active=%s err=%v]", si.FilterSubject, si.Lag, si.Active, si.Error)
				}
				return fmt.Errorf("%s holds %d readings, want %d;%s", r, info.State.Msgs, want, src)
			}
			return nil
		})
	}
}

func TestApplyIsIdempotent(t *testing.T) {
	e := startTestRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Apply(ctx, DefaultTopology(DefaultRegions)); err != nil {
		t.Fatalf("second apply: %v", err)
	}
}

// TestStopAndStartRegion stops us-east's server and starts it again: the
// URL stays the same, a client's connection comes back by itself, the
// stream keeps what it held (file storage), and the region rejoins the hub,
// so its new readings reach eu-west.
func TestStopAndStartRegion(t *testing.T) {
	e := startTestRegions(t)
	ctx := context.Background()
	url := e.URL("us-east")
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(seq int) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		msg := nats.NewMsg(fmt.Sprintf("telemetry.us-east.probe.p-%d", seq%3))
		msg.Data = []byte("{}")
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("p:1:%d", seq))
		_, err := js.PublishMsg(pctx, msg)
		return err
	}
	for i := 1; i <= 10; i++ {
		if err := publish(i); err != nil {
			t.Fatal(err)
		}
	}
	held := func(region string, want uint64) func() error {
		rjs, err := jetstream.NewWithDomain(testConn(t, e, region), region)
		if err != nil {
			t.Fatal(err)
		}
		return func() error {
			info, err := readingsInfo(ctx, rjs)
			if err != nil {
				return err
			}
			if info.State.Msgs != want {
				return fmt.Errorf("%s holds %d readings, want %d", region, info.State.Msgs, want)
			}
			return nil
		}
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, held("eu-west", 10))
	if err := e.StopRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	if e.Server("us-east") != nil {
		t.Error("Server of a stopped region is not nil")
	}
	if e.URL("us-east") != url {
		t.Errorf("URL changed while stopped: %s, was %s", e.URL("us-east"), url)
	}
	if err := e.StopRegion("us-east"); err != nil {
		t.Errorf("stopping twice: %v", err)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("still connected to a stopped server")
		}
		return nil
	})
	if err := e.StartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	if err := e.StartRegion("us-east"); err != nil {
		t.Errorf("starting a running region: %v", err)
	}
	for i := 11; i <= 20; i++ {
		checkFor(t, 30*time.Second, 50*time.Millisecond, func() error { return publish(i) })
	}
	// A restart after a stop, and one after a direct Shutdown, work too.
	if err := e.RestartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	e.Server("us-east").Shutdown()
	if err := e.StartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	if e.URL("us-east") != url {
		t.Errorf("URL changed across restarts: %s, was %s", e.URL("us-east"), url)
	}
	started := time.Now()
	checkFor(t, 30*time.Second, 50*time.Millisecond, held("us-east", 20))
	// eu-west's source of us-east retries with a growing backoff while
	// us-east is gone (nats-server: 10 s after the first failure, then 20 s
	// more...), so catching up may take a while.
	checkFor(t, 90*time.Second, 100*time.Millisecond, held("eu-west", 20))
	t.Logf("eu-west caught up %s after us-east's last start", time.Since(started).Round(time.Millisecond))
}

func testConn(t *testing.T, e *Embedded, region string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(e.URL(region))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestConsoleQuietAboutDemoPasswords: nats-server's warning about the
// demo's public plaintext passwords stays out of the console (it is said
// at debug level); other warnings still come through.
func TestConsoleQuietAboutDemoPasswords(t *testing.T) {
	var buf bytes.Buffer
	a := &slogAdapter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	a.Warnf("Plaintext passwords detected, use nkeys or bcrypt")
	a.Warnf("JetStream resource limits %d", 42)
	if got := buf.String(); strings.Contains(got, "Plaintext") || !strings.Contains(got, "JetStream resource limits 42") {
		t.Errorf("console:\n%s", got)
	}
}

// TestConsoleQuietAboutClusterChatter: a region cluster's servers dialling
// one that is starting, or stopped by the stop-leader scenario, say so at
// debug level; other errors still reach the console.
func TestConsoleQuietAboutClusterChatter(t *testing.T) {
	var buf bytes.Buffer
	a := &slogAdapter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	a.Errorf("Error trying to connect to route (attempt %d): dial tcp 127.0.0.1:4248: connect: connection refused", 9)
	a.Warnf("Waiting for routing to be established...")
	a.Warnf("JetStream has not established contact with a meta leader")
	a.Errorf("JetStream failed to store a msg on stream %q", "READINGS")
	if got := buf.String(); strings.Contains(got, "route") || strings.Contains(got, "meta leader") || !strings.Contains(got, "failed to store a msg") {
		t.Errorf("console:\n%s", got)
	}
}

// TestIdleConnectionsToARegionAreClosed: connections to a region's client
// port that never log in are closed at nats-server's 2 s auth timeout,
// while a client that logs in works throughout.
func TestIdleConnectionsToARegionAreClosed(t *testing.T) {
	const idle = 500
	e := startTestRegions(t)
	addr := strings.TrimPrefix(e.URLAs("us-east", ""), "nats://")
	if at := strings.LastIndex(addr, "@"); at >= 0 {
		addr = addr[at+1:]
	}
	conns := make([]net.Conn, 0, idle)
	dialed := make([]time.Time, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns, dialed = append(conns, c), append(dialed, time.Now())
	}
	nc := testConn(t, e, "us-east")
	if _, err := nc.Request("$JS.us-east.API.INFO", nil, 5*time.Second); err != nil {
		t.Errorf("a client that logged in, during the idle flood: %v", err)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(dialed[i].Add(4 * time.Second))
			_, err := io.ReadAll(c) // INFO, then -ERR 'Authentication Timeout', then EOF
			if err != nil {
				t.Errorf("idle connection %d still open %v after it was opened: %v", i, time.Since(dialed[i]).Round(time.Millisecond), err)
			}
		})
	}
	wg.Wait()
}
