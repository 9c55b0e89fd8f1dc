package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestClusterReplicaDownUnderLoad stores into a ClickHouse cluster of two
// shards of two replicas (ZooKeeper, ClickHouse 18.16 or later) and
// SIGKILLs, under load, the member the writer talks to, which is also the
// first replica of shard 1, for 30 s. The writer goes on through the next
// member, its inserts landing on shard 1's other replica, and a writer
// started in its place halfway does too; once the replica
// is back, every reading is stored once (through the Distributed table,
// FINAL and without), the rollups count each once, and each shard's
// replicas hold the same rows.
func TestClusterReplicaDownUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage; skipped with -short")
	}
	const outage = 30 * time.Second
	c := testharness.ClickHouseCluster(t, 2, 2)
	e := newEnvOn(t, strings.Join(c.Addrs(), ","), c.Name)
	w := start(t, e.config())
	l := testharness.ReadingsLoad(t, e.js, testharness.LoadOptions{Region: region, Prefix: "ld", Devices: 20, Rate: 1000, Boot: 7000, Metrics: metricNames})
	stored := func(n uint64) func() error {
		return func() error {
			if st := w.Status(); st.ReadingsStored < n {
				return fmt.Errorf("writer %+v, want %d readings stored", st, n)
			}
			return nil
		}
	}
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, stored(2000))

	victim := c.Shards[0][0]
	victim.Kill()
	killed := time.Now()
	sentBefore, storedBefore := l.Sent(), w.Status().ReadingsStored
	// Halfway, the writer is replaced: a writer starting while a member
	// is down must not wait for it (its migrations are recorded already).
	time.Sleep(outage / 2) // half the outage, not a wait for a condition
	w.stop(t)
	storedBefore -= w.Status().ReadingsStored
	w = start(t, e.config())
	time.Sleep(time.Until(killed.Add(outage))) // the rest of the outage
	sentDuring, storedDuring := l.Sent()-sentBefore, w.Status().ReadingsStored-storedBefore
	// A cluster is there so that storage goes on without one replica:
	// most of what arrived during the outage is stored during it.
	if storedDuring < sentDuring/2 {
		t.Errorf("%d readings stored during the %s outage of %d published; writer %+v", storedDuring, outage, sentDuring, w.Status())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := victim.Restart(ctx); err != nil {
		t.Fatalf("restarting shard 1 replica 1: %v", err)
	}
	loadGoesOn(t, l, 1000)
	total := l.Stop(t)
	e.checkExactlyOnce(t, w, l, total)
	checkReplicasConverge(ctx, t, c, total*uint64(len(metricNames)))
	t.Logf("%d readings, %d published and %d stored during the outage; writer %+v", total, sentDuring, storedDuring, w.Status())
}

// checkReplicasConverge waits for each replica to fetch what its shard
// took (SYSTEM SYNC REPLICA), then checks that a shard's replicas hold the
// same rows, and the shards want rows in all.
func checkReplicasConverge(ctx context.Context, t *testing.T, c *chserver.Cluster, want uint64) {
	t.Helper()
	var sum uint64
	for s, rs := range c.Shards {
		var counts []uint64
		for r, srv := range rs {
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Addr()}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var n uint64
			if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA telemetry.readings_local"); err != nil {
				t.Fatalf("shard %d replica %d: %v", s+1, r+1, err)
			}
			if err := conn.QueryRow(ctx, "SELECT count() FROM telemetry.readings_local FINAL").Scan(&n); err != nil {
				t.Fatalf("shard %d replica %d: %v", s+1, r+1, err)
			}
			counts = append(counts, n)
		}
		for r, n := range counts {
			if n != counts[0] {
				t.Errorf("shard %d: replica %d holds %d rows, replica 1 %d", s+1, r+1, n, counts[0])
			}
		}
		if counts[0] == 0 {
			t.Errorf("shard %d holds nothing: the readings are not sharded", s+1)
		}
		sum += counts[0]
	}
	if sum != want {
		t.Errorf("the shards hold %d rows in all, want %d", sum, want)
	}
}
