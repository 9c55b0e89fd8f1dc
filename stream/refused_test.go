package stream_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestBadLoginsToARegionAreCountedNotLogged: a flood of wrong passwords at
// a region is refused, each counted in telemetry_nats_refused_total, and
// logged in a line or two, not one line each as nats-server does; the
// right password still logs in.
func TestBadLoginsToARegionAreCountedNotLogged(t *testing.T) {
	const attempts = 300
	var logged testharness.SyncBuffer
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{Regions: stream.DefaultRegions, DataDir: t.TempDir()},
		slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	u, err := url.Parse(e.URLAs("us-east", "dashboard"))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("dashboard", "not-the-password")
	for i := range attempts {
		nc, err := nats.Connect(u.String(), nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatalf("login %d with a wrong password was accepted", i)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("login %d with a wrong password: %v, want %v", i, err, nats.ErrAuthorization)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Refused())
	testharness.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		families, err := reg.Gather()
		if err != nil {
			return err
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				if f.GetName() == "telemetry_nats_refused_total" && m.GetLabel()[0].GetValue() == "bad_login" {
					if n := m.GetCounter().GetValue(); n != attempts {
						return fmt.Errorf("telemetry_nats_refused_total{reason=\"bad_login\"} %v, want %d", n, attempts)
					}
					return nil
				}
			}
		}
		return fmt.Errorf("no telemetry_nats_refused_total{reason=\"bad_login\"} in %d families", len(families))
	})
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if n := strings.Count(logged.String(), "authentication error"); n != 0 {
		t.Errorf("%d of nats-server's own lines about failed logins in the log, want none:\n%s", n, logged.String())
	}
	if n := strings.Count(logged.String(), "NATS login refused"); n < 1 || n > 2 {
		t.Errorf("%d lines about %d failed logins, want 1 or 2:\n%s", n, attempts, strings.Join(lines, "\n"))
	}
	nc, err := nats.Connect(e.URLAs("us-east", "dashboard"), nats.NoReconnect())
	if err != nil {
		t.Fatalf("the right password after the flood: %v", err)
	}
	nc.Close()
}
