package testharness

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/zkserver"
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

// ClickHouseCluster starts a ZooKeeper and a cluster of shards x replicas
// ClickHouse servers coordinated by it (chserver.StartCluster), each with
// its data in t.TempDir(), and stops them all when the test ends. Without
// ClickHouse or ZooKeeper the test is skipped (failed in CI).
func ClickHouseCluster(t testing.TB, shards, replicas int) *chserver.Cluster {
	t.Helper()
	argv := RequireClickHouse(t)
	if _, _, err := zkserver.Find(); err != nil {
		missingServer(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(shards*replicas)*chserver.DefaultStartTimeout)
	defer cancel()
	zk, err := zkserver.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("starting ZooKeeper: %v", err)
	}
	t.Cleanup(zk.Stop)
	c, err := chserver.StartCluster(ctx, chserver.ClusterOptions{
		Argv:      argv,
		Dir:       t.TempDir(),
		Shards:    shards,
		Replicas:  replicas,
		ZooKeeper: []string{zk.Addr()},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("starting a ClickHouse cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for s, rs := range c.Shards {
				for r, srv := range rs {
					t.Logf("ClickHouse shard %d replica %d (%s), running %v, its logs end:\n%s", s+1, r+1, srv.Addr(), srv.Running(), srv.LogTail(15))
				}
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the ClickHouse cluster: %v", err)
		}
	})
	return c
}
