package pipeline

import (
	"testing"

	"context"
	"fmt"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/stream"
	"log/slog"
	"net"
	"strings"
)

// TestDemoMQTTPasswords: the demo's broker runs from the repository's
// password file with the demo defaults, and from a file of its own with the
// passwords a presenter gives.
func TestDemoMQTTPasswords(t *testing.T) {
	file, err := MQTTAuth{}.passwd()
	if err != nil || file != nil {
		t.Fatalf("default passwords: file %q, %v; want the repository's (nil)", file, err)
	}
	file, err = MQTTAuth{IngestPassword: "i-secret"}.passwd()
	if err != nil {
		t.Fatal(err)
	}
	pw, err := broker.ParsePasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		ok             bool
	}{
		{deploy.MQTTIngestUser, "i-secret", true},
		{deploy.MQTTHealthUser, deploy.MQTTHealthPassword, true},
		{deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword, false},
		{"device", "device", false}, // the old shared fleet user
	} {
		if got := pw.Check(c.user, c.password); got != c.ok {
			t.Errorf("%s with %q: %v, want %v", c.user, c.password, got, c.ok)
		}
	}
}

// A pipeline that cannot start leaves nothing behind: when its broker's
// address is taken, New fails saying so, and the NATS regions it had
// already started are gone, their ports free for the next try.
func TestFailedStartReleasesWhatItStarted(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ports := map[string]int{}
	for _, r := range stream.DefaultRegions {
		ports[r] = freePort(t)
	}
	cfg := Config{Regions: stream.DefaultRegions, Topology: stream.DefaultTopology(stream.DefaultRegions), NATSPorts: ports,
		MQTT: taken.Addr().String(), DataDir: t.TempDir(), ClickHouse: "none"}
	p, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		p.Close()
		t.Fatal("New succeeded with the broker's address taken")
	}
	if !strings.Contains(err.Error(), "--mqtt") {
		t.Errorf("error %q does not say which flag to change", err)
	}
	for r, port := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("region %s's NATS port %d still taken after the failed start: %v", r, port, err)
			continue
		}
		ln.Close()
	}
	// And the same configuration starts once the address is free.
	taken.Close()
	cfg.MQTT = "127.0.0.1:0"
	p, err = New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	p.Close()
}

// freePort is a TCP port nothing listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
