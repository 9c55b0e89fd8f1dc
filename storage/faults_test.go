package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

// checkExactlyOnce waits until ClickHouse holds every reading the load
// published: per device the ledger shows seq 1..last with none missing,
// the table holds each row once even without FINAL (no copy reached an
// insert), and the rollups count each reading once.
func (e *env) checkExactlyOnce(t *testing.T, w interface{ Status() storage.Status }, l *testharness.Load, total uint64) {
	t.Helper()
	want := total * uint64(len(metricNames))
	testharness.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		n, err := e.tryCount(true)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d rows (FINAL), want %d; writer %+v", n, want, w.Status())
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ledger, err := storage.Ledger(ctx, e.conn, storage.LedgerOptions{DevicePrefix: "ld-"})
	if err != nil {
		t.Fatal(err)
	}
	last := l.Last()
	if len(ledger) != len(last) {
		t.Errorf("ledger has %d devices, want %d", len(ledger), len(last))
	}
	for _, r := range ledger {
		if n := last[r.Device]; r.MinSeq != 1 || r.MaxSeq != n || r.Readings != n || r.Missing != 0 {
			t.Errorf("ledger %+v, want seq 1..%d all stored", r, n)
		}
	}
	if n := e.count(t, false); n != want {
		t.Errorf("%d rows without FINAL, want %d: a copy reached an insert", n, want)
	}
	e.checkRollups(t, int(total))
}

// loadGoesOn waits until l has published n more readings.
func loadGoesOn(t *testing.T, l *testharness.Load, n uint64) {
	t.Helper()
	sent := l.Sent()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if l.Sent() < sent+n {
			return errors.New("load not going on")
		}
		return nil
	})
}

// TestClickHouseStoppedUnderLoad stops ClickHouse for 30 s while readings
// keep arriving: the writer retries, JetStream keeps the backlog, and once
// ClickHouse is back every reading is stored exactly once with no gap, in
// the table and in the rollups.
func TestClickHouseStoppedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage; skipped with -short")
	}
	const outage = 30 * time.Second
	e := newEnv(t)
	w := start(t, e.config())
	l := testharness.ReadingsLoad(t, e.js, testharness.LoadOptions{Region: region, Prefix: "ld", Devices: 5, Rate: 200, Boot: 7000, Metrics: metricNames})
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.ReadingsStored < 200 {
			return fmt.Errorf("writer %+v, want readings stored", st)
		}
		return nil
	})

	if err := e.ch.Stop(); err != nil {
		t.Fatalf("stopping ClickHouse: %v", err)
	}
	stopped, sentBefore := time.Now(), l.Sent()
	testharness.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateRetrying {
			return fmt.Errorf("writer %+v, want retrying", st)
		}
		return nil
	})
	time.Sleep(time.Until(stopped.Add(outage))) // the outage itself, not a wait for a condition
	if w.Status().State != storage.StateRetrying {
		t.Errorf("writer %+v at the end of the outage, want retrying", w.Status())
	}
	if l.Sent() <= sentBefore {
		t.Fatalf("no readings published during the outage")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.ch.Restart(ctx); err != nil {
		t.Fatalf("restarting ClickHouse: %v", err)
	}
	restarted := time.Now()
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateOK || st.Error != "" {
			return fmt.Errorf("writer %+v, want ok again", st)
		}
		return nil
	})
	t.Logf("outage %s: %d readings published during it; writer ok %s after restart", outage, l.Sent()-sentBefore, time.Since(restarted).Round(time.Millisecond))
	// A little more load after the recovery, then the count.
	loadGoesOn(t, l, 200)
	total := l.Stop(t)
	e.checkExactlyOnce(t, w, l, total)
	t.Logf("%d readings stored exactly once; writer %+v", total, w.Status())
}
