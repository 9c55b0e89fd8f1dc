package testharness

import (
	"context"
	"log/slog"
	"testing"

	"github.com/telemetry-demo/telemetry/internal/chserver"
)

// ClickHouse starts a fresh ClickHouse server with its data in t.TempDir(),
// on free ports, and stops it when the test ends. Connect to Addr() with the
// native protocol, user default, no password. Without a ClickHouse binary
// the test is skipped (failed in CI).
func ClickHouse(t testing.TB) *chserver.Server {
	t.Helper()
	argv := RequireClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), chserver.DefaultStartTimeout)
	defer cancel()
	srv, err := chserver.Start(ctx, chserver.Options{
		Argv:   argv,
		Dir:    t.TempDir(),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("starting ClickHouse: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stopping ClickHouse: %v", err)
		}
	})
	return srv
}
