package httpserv_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestIdleConnectionsAreBounded: a service's API (storage's, ingest's)
// closes idle connections from one address beyond ServiceLimits.PerAddr at once
// and the rest at the header timeout, counted, while it still answers
// another address.
func TestIdleConnectionsAreBounded(t *testing.T) {
	idle := httpserv.ServiceLimits.PerAddr + 40
	ln, err := httpserv.Listen("127.0.0.1:0", httpserv.ServiceLimits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- httpserv.Serve(ctx, ln, httpserv.Mux(prometheus.NewRegistry(), func() error { return nil }), slog.New(slog.DiscardHandler))
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	opened := time.Now()
	conns := testharness.IdleConns(t, ln.Addr().String(), net.ParseIP("127.0.0.5"), idle)
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("healthz from another address during the flood: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz during the flood: %s %s", resp.Status, body)
	}

	early, late := testharness.WhenClosed(t, conns, opened, httpserv.ReadHeaderTimeout)
	if early != idle-httpserv.ServiceLimits.PerAddr || late != httpserv.ServiceLimits.PerAddr {
		t.Errorf("%d closed at once and %d at the header timeout, want %d and %d", early, late, idle-httpserv.ServiceLimits.PerAddr, httpserv.ServiceLimits.PerAddr)
	}
	if n := ln.Refused.Count("too_many_from_address"); n != uint64(idle-httpserv.ServiceLimits.PerAddr) {
		t.Errorf("refused too_many_from_address: %d, want %d", n, idle-httpserv.ServiceLimits.PerAddr)
	}
}
