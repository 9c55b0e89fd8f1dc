package testharness

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/stream"
)

// Regions starts the hub and the default regions in-process, from the same
// deploy/nats files as compose and the demo, with the topology applied. They
// are shut down when the test ends.
func Regions(t testing.TB) *stream.Embedded {
	t.Helper()
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{Regions: stream.DefaultRegions, DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("starting NATS regions: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Apply(ctx, stream.DefaultTopology(stream.DefaultRegions)); err != nil {
		t.Fatalf("applying topology: %v", err)
	}
	return e
}

// CheckFor polls f every interval until it returns nil, failing the test
// with f's last error once total has passed.
func CheckFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	if err := poll.Until(total, interval, f); err != nil {
		t.Fatalf("condition %v", err)
	}
}
