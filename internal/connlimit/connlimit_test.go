package connlimit_test

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

func TestTrackerBoundsTotalAndPerAddress(t *testing.T) {
	tr := connlimit.NewTracker(connlimit.Limits{Total: 3, PerAddr: 2})
	for i, want := range []string{"", "", connlimit.ReasonTooManyFromAddress} {
		if got := tr.Acquire("10.0.0.1"); got != want {
			t.Fatalf("connection %d from 10.0.0.1: %q, want %q", i+1, got, want)
		}
	}
	if got := tr.Acquire("10.0.0.2"); got != "" {
		t.Fatalf("first from 10.0.0.2: refused %q", got)
	}
	if got := tr.Acquire("10.0.0.3"); got != connlimit.ReasonTooMany {
		t.Fatalf("fourth in all: %q, want %q", got, connlimit.ReasonTooMany)
	}
	tr.Release("10.0.0.1")
	if got := tr.Acquire("10.0.0.1"); got != "" {
		t.Fatalf("10.0.0.1 after one of its connections closed: refused %q", got)
	}
	if n := tr.Held(); n != 3 {
		t.Errorf("held %d, want 3", n)
	}
}

// TestTallyLogsAKindOncePerInterval: the first event of a kind is logged at
// once, the rest of the interval in one line with their count; every event
// is counted in the metric.
func TestTallyLogsAKindOncePerInterval(t *testing.T) {
	var buf testharness.SyncBuffer
	tally := connlimit.NewTally("test_refused_total", "Test refusals.", "refused", slog.New(slog.NewTextHandler(&buf, nil)), "a", "b", "c")
	tally.SetLogInterval(200 * time.Millisecond)
	for range 1000 {
		tally.Add("a", "10.0.0.1")
	}
	tally.Add("b", "10.0.0.2")
	if err := poll.Until(5*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(buf.String(), "\n"); n < 3 {
			return fmt.Errorf("%d lines logged", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines for 1,001 events of two kinds, want 3:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"msg=refused reason=a from=10.0.0.1 count=1", "msg=refused reason=b from=10.0.0.2 count=1", "msg=refused reason=a from=10.0.0.1 count=999 over=200ms"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no line with %q:\n%s", want, buf.String())
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tally)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range families[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if want := map[string]float64{"a": 1000, "b": 1, "c": 0}; families[0].GetName() != "test_refused_total" || !maps.Equal(got, want) {
		t.Errorf("%s by reason %v, want test_refused_total %v", families[0].GetName(), got, want)
	}
}

// TestListenClosesConnectionsBeyondTheLimit: a connection beyond the
// per-address bound is closed as it is accepted and counted; once one
// accepted is closed, the address gets in again.
func TestListenClosesConnectionsBeyondTheLimit(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tally := connlimit.NewTally("test_listen_refused_total", "Test.", "refused", slog.New(slog.DiscardHandler))
	ln := connlimit.Listen(raw, connlimit.Limits{PerAddr: 2}, tally)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(third); err != nil {
		t.Fatalf("the third connection from one address was not closed: %v", err)
	}
	if n := tally.Count(connlimit.ReasonTooManyFromAddress); n != 1 {
		t.Errorf("refused %d, want 1", n)
	}
	first.Close()
	first.Close() // released once
	dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection after one closed was not accepted")
	}
	second.Close()
}

// TestHostOfEveryKindOfAddress: the key of the per-address limits, for a
// TCP address, a "host:port" string, and none at all (nats-server hands a
// connection closed meanwhile to the login gate without one), which must
// not panic.
func TestHostOfEveryKindOfAddress(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4222}, "192.0.2.7"},
		{&net.UnixAddr{Name: "/tmp/x.sock", Net: "unix"}, "/tmp/x.sock"},
		{nil, ""},
	} {
		if got := connlimit.Host(c.addr); got != c.want {
			t.Errorf("Host(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
}
