package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// dialWSFrom opens a websocket to base's /ws from the loopback address ip,
// returning the HTTP status of a refused upgrade.
func dialWSFrom(base, ip string) (*websocket.Conn, int, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	return conn, status, err
}

// TestViewerFloodFromOneAddress: 2,000 websocket clients from one address
// that never read get in up to the per-address bound and are refused 429
// beyond it, counted; a viewer on another address keeps its push rate
// throughout; once the flood leaves, its address gets in again.
func TestViewerFloodFromOneAddress(t *testing.T) {
	const (
		flood = 2_000
		perIP = 150
		push  = 100 * time.Millisecond
	)
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		PushInterval: push, MaxViewersPerIP: perIP})
	waitConsuming(t, base)

	viewer, status, err := dialWSFrom(base, "127.0.0.3")
	if err != nil {
		t.Fatalf("viewer: %v (HTTP %d)", err, status)
	}
	defer viewer.Close()
	var (
		mu      sync.Mutex
		arrived []time.Time
	)
	go func() {
		for {
			if _, _, err := viewer.ReadMessage(); err != nil {
				return
			}
			mu.Lock()
			arrived = append(arrived, time.Now())
			mu.Unlock()
		}
	}()

	start := time.Now()
	var accepted []*websocket.Conn
	defer func() {
		for _, c := range accepted {
			c.Close()
		}
	}()
	// At least flood attempts, and for at least three seconds, so that
	// the other viewer is measured under a flood, not beside a burst.
	refused, attempts := 0, 0
	for i := 0; i < flood || time.Since(start) < 3*time.Second; i++ {
		attempts++
		c, status, err := dialWSFrom(base, "127.0.0.2")
		switch {
		case err == nil:
			accepted = append(accepted, c)
		case errors.Is(err, websocket.ErrBadHandshake) && status == http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("flood connection %d: %v (HTTP %d), want accepted or 429", i, err, status)
		}
	}
	end := time.Now()
	if len(accepted) != perIP || refused != attempts-perIP {
		t.Errorf("%d accepted and %d refused of %d from one address, want %d and %d", len(accepted), refused, attempts, perIP, attempts-perIP)
	}
	if n := d.refused.Count(refusedViewersFromIP); n != uint64(attempts-perIP) {
		t.Errorf("telemetry_dashboard_refused_total{reason=%q} = %d, want %d", refusedViewersFromIP, n, attempts-perIP)
	}

	// The other viewer's snapshots kept coming through the flood: no gap
	// of more than ten push intervals (one second) while it lasted.
	waitFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(arrived) == 0 || arrived[len(arrived)-1].Before(end) {
			return fmt.Errorf("no snapshot since the flood ended")
		}
		return nil
	})
	mu.Lock()
	last, gaps := start, time.Duration(0)
	for _, at := range arrived {
		if at.After(start) {
			gaps = max(gaps, at.Sub(last))
			last = at
		}
	}
	n := len(arrived)
	mu.Unlock()
	if gaps > 10*push {
		t.Errorf("the other viewer waited %v between snapshots during the flood (%v long), want at most %v", gaps, end.Sub(start).Round(time.Millisecond), 10*push)
	}
	t.Logf("flood of %d attempts took %v; the other viewer got %d snapshots, longest wait %v", attempts, end.Sub(start).Round(time.Millisecond), n, gaps)

	// The flood leaves: its address gets in again.
	for _, c := range accepted {
		c.Close()
	}
	accepted = nil
	waitFor(t, 10*time.Second, func() error {
		c, status, err := dialWSFrom(base, "127.0.0.2")
		if err != nil {
			return fmt.Errorf("after the flood left: %v (HTTP %d)", err, status)
		}
		c.Close()
		return nil
	})
}

// TestIdleConnectionsToTheDashboard: idle TCP connections from one address
// beyond the per-address bound are closed as they come, the rest when the
// header timeout ends; meanwhile the page still loads from another address.
func TestIdleConnectionsToTheDashboard(t *testing.T) {
	const (
		perIP = 50
		idle  = 80
	)
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"}, MaxConnsPerIP: perIP})
	waitConsuming(t, base)

	opened := time.Now()
	conns := testharness.IdleConns(t, d.Addr(), net.ParseIP("127.0.0.4"), idle)
	// The page loads from another address while they are open.
	if body := get(t, base+"/"); !strings.Contains(body, "<html") {
		t.Errorf("page from another address during the idle flood: %.80q", body)
	}
	early, late := testharness.WhenClosed(t, conns, opened, readHeaderTimeout)
	if early != idle-perIP || late != perIP {
		t.Errorf("%d idle connections closed at once and %d at the header timeout, want %d and %d", early, late, idle-perIP, perIP)
	}
	if n := d.refused.Count("too_many_from_address"); n != idle-perIP {
		t.Errorf("refused too_many_from_address: %d, want %d", n, idle-perIP)
	}
}
