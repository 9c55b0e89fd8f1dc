package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// hubServer serves h on /ws over real loopback TCP until the test ends.
func hubServer(t testing.TB, h *hub) string {
	t.Helper()
	up := websocket.Upgrader{WriteBufferSize: 16 << 10}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if !h.add(conn, nil, nil) {
			conn.Close()
		}
	}))
	t.Cleanup(func() {
		if t.Failed() {
			return // a hub stuck on a client would hang close: leave it
		}
		h.close()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// TestStalledClientDoesNotSlowOthers sends snapshots in lockstep with the
// healthy clients: snapshot i+1 goes out only once every healthy client has
// read snapshot i. A stalled client (one that never reads, with a small
// receive buffer) fills its socket after a few snapshots; if the hub ever
// waited for it, the healthy clients would stop receiving and the test
// would fail at its deadline. Timeouts are set far beyond the test, so the
// only way the stalled client can go is by its queue filling up.
func TestStalledClientDoesNotSlowOthers(t *testing.T) {
	const (
		healthy  = 3
		messages = 128
		size     = 256 << 10 // 32 MB per client in all: far more than the stalled socket can buffer
	)
	cfg := Config{ClientQueue: 4, WriteTimeout: 10 * time.Minute, PongWait: 10 * time.Minute}.withDefaults()
	h := newHub(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	url := hubServer(t, h)

	// The stalled client: connected, never reading.
	small := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		}
		return c, err
	}}
	stalled, resp, err := small.Dial(url, nil)
	if err != nil {
		t.Fatalf("dialing: %v", err)
	}
	resp.Body.Close()
	defer stalled.Close()

	// The healthy clients report each snapshot's index as they read it.
	got := make([]chan int, healthy)
	for i := range got {
		conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("dialing: %v", err)
		}
		resp.Body.Close()
		defer conn.Close()
		got[i] = make(chan int, messages)
		go func(ch chan int) {
			defer close(ch)
			for {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				ch <- int(msg[0]) | int(msg[1])<<8
			}
		}(got[i])
	}
	waitFor(t, 10*time.Second, func() error {
		if n := h.count(); n != healthy+1 {
			return fmt.Errorf("%d clients registered, want %d", n, healthy+1)
		}
		return nil
	})

	payload := bytes.Repeat([]byte("x"), size)
	for i := range messages {
		payload[0], payload[1] = byte(i), byte(i>>8)
		msg := bytes.Clone(payload)
		sent := make(chan struct{})
		go func() { h.broadcast(msg); close(sent) }()
		deadline := time.After(60 * time.Second)
		select {
		case <-sent:
		case <-deadline:
			t.Fatalf("broadcast of snapshot %d blocked: the hub waits on a client", i)
		}
		for c, ch := range got {
			select {
			case n, ok := <-ch:
				if !ok {
					t.Fatalf("healthy client %d disconnected at snapshot %d", c, i)
				}
				if n != i {
					t.Fatalf("healthy client %d got snapshot %d, want %d: one was skipped", c, n, i)
				}
			case <-deadline:
				t.Fatalf("healthy client %d has not received snapshot %d: delivery stalled behind the stalled client", c, i)
			}
		}
	}

	if n := h.count(); n != healthy {
		t.Errorf("%d clients registered after %d snapshots, want the %d healthy ones: the stalled one was never dropped", n, messages, healthy)
	}
	if got := h.dropped.Count(dropQueueFull); got != 1 {
		t.Errorf("dropped{reason=queue_full} = %v, want 1 (the stalled client)", got)
	}
}
