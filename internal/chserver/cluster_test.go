package chserver_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestClusterReplicatesAndDistributes builds two shards of two replicas:
// a replicated table per shard and a Distributed table over them, made by
// ON CLUSTER statements from one member. Rows inserted through the
// Distributed table land by key on one shard, are copied to that shard's
// other replica, and are all read back through the Distributed table.
func TestClusterReplicatesAndDistributes(t *testing.T) {
	c := testharness.ClickHouseCluster(t, 2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := open(t, c.Shards[0][0].Addr())
	defer conn.Close()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS t ON CLUSTER telemetry",
		"CREATE TABLE IF NOT EXISTS t.kv_local ON CLUSTER telemetry (k UInt64, v String) " +
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/t/kv', '{replica}') ORDER BY k",
		"CREATE TABLE IF NOT EXISTS t.kv ON CLUSTER telemetry AS t.kv_local " +
			"ENGINE = Distributed(telemetry, t, kv_local, k)",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sync := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	b, err := conn.PrepareBatch(sync, "INSERT INTO t.kv (k, v)")
	if err != nil {
		t.Fatal(err)
	}
	for k := range uint64(100) {
		if err := b.Append(k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	// Through the Distributed table: every row once, from both shards.
	for q, want := range map[string]uint64{
		"SELECT count() FROM t.kv FINAL": 100,
		"SELECT count() FROM t.kv WHERE k IN (SELECT number FROM system.numbers LIMIT 30)": 30,
	} {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n != want {
			t.Errorf("%s = %d, want %d", q, n, want)
		}
	}
	// Each shard holds half the keys, and each replica all of its shard's
	// once it has fetched what the other took.
	for s, rs := range c.Shards {
		for r, srv := range rs {
			cn := open(t, srv.Addr())
			defer cn.Close()
			if err := cn.Exec(ctx, "SYSTEM SYNC REPLICA t.kv_local"); err != nil {
				t.Fatalf("shard %d replica %d: %v", s+1, r+1, err)
			}
			var n uint64
			if err := cn.QueryRow(ctx, "SELECT count() FROM t.kv_local WHERE k % 2 = "+strconv.Itoa(s)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 50 {
				t.Errorf("shard %d replica %d holds %d of its 50 keys", s+1, r+1, n)
			}
		}
	}
}
