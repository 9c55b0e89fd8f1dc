package testharness

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS starts a single in-process nats-server with JetStream on a free port,
// storing under t.TempDir(), with JetStream domain domain (empty for none).
// It is shut down when the test ends. Returns the client URL.
func NATS(t testing.TB, domain string) (*server.Server, string) {
	t.Helper()
	opts := &server.Options{
		Host:            "127.0.0.1",
		Port:            -1,
		NoLog:           true,
		NoSigs:          true,
		JetStream:       true,
		JetStreamDomain: domain,
		StoreDir:        t.TempDir(),
		MaxPayload:      1 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server not ready after 10s")
	}
	t.Cleanup(s.Shutdown)
	return s, s.ClientURL()
}

// Connect dials url and closes the connection when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
