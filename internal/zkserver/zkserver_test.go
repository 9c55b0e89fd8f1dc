package zkserver_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/internal/zkserver"
)

// TestStartServesThenStops starts Debian's ZooKeeper, finds it serving on
// its loopback port, and finds the port closed once it is stopped.
func TestStartServesThenStops(t *testing.T) {
	if _, _, err := zkserver.Find(); err != nil {
		if testharness.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), zkserver.StartTimeout)
	defer cancel()
	s, err := zkserver.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr %q: want a loopback address (%v)", s.Addr(), err)
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dialing the started server: %v", err)
	}
	c.Close()
	s.Stop()
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after Stop", s.Addr())
	}
}
