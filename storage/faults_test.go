package storage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

// load publishes readings of a few devices into READINGS at a steady rate,
// as ingest would, until stopped. It remembers each device's last seq.
type load struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	mu     sync.Mutex
	last   map[string]uint64
}

// startLoad publishes rate readings a second, round robin over devices
// devices of boot boot, each with len(metricNames) metrics.
func (e *env) startLoad(t *testing.T, devices, rate int, boot uint64) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan error, 1), last: map[string]uint64{}}
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				l.done <- nil
				return
			case <-tick.C:
			}
			dev := fmt.Sprintf("ld-%02d", i%devices)
			l.mu.Lock()
			seq := l.last[dev] + 1
			l.mu.Unlock()
			r := protocol.Reading{Version: 1, Device: dev, Boot: boot, Seq: seq, TS: time.Now().UnixMilli()}
			for j, m := range metricNames {
				r.Metrics = append(r.Metrics, protocol.Metric{Name: m, Value: float64(seq) + float64(j)})
			}
			msg := nats.NewMsg("telemetry." + region + ".ld." + dev)
			msg.Data = protocol.AppendEncode(nil, r)
			msg.Header.Set(jetstream.MsgIDHeader, r.ID())
			// Not cancelled by stop: a reading half published would be in
			// the stream but not in last.
			pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := e.js.PublishMsg(pctx, msg)
			pcancel()
			if err != nil {
				l.done <- fmt.Errorf("publishing %s: %w", r.ID(), err)
				return
			}
			l.mu.Lock()
			l.last[dev] = seq
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.stop(t) })
	return l
}

// stop ends the load and returns how many readings it published.
func (l *load) stop(t *testing.T) uint64 {
	t.Helper()
	l.once.Do(func() {
		l.cancel()
		if err := <-l.done; err != nil {
			t.Errorf("load: %v", err)
		}
	})
	return l.sent()
}

func (l *load) sent() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n uint64
	for _, s := range l.last {
		n += s
	}
	return n
}

// checkExactlyOnce waits until ClickHouse holds every reading the load
// published: per device the ledger shows seq 1..last with none missing,
// the table holds each row once even without FINAL (no copy reached an
// insert), and the rollups count each reading once.
func (e *env) checkExactlyOnce(t *testing.T, w interface{ Status() storage.Status }, l *load, total uint64) {
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
	if len(ledger) != len(l.last) {
		t.Errorf("ledger has %d devices, want %d", len(ledger), len(l.last))
	}
	for _, r := range ledger {
		if last := l.last[r.Device]; r.MinSeq != 1 || r.MaxSeq != last || r.Readings != last || r.Missing != 0 {
			t.Errorf("ledger %+v, want seq 1..%d all stored", r, last)
		}
	}
	if n := e.count(t, false); n != want {
		t.Errorf("%d rows without FINAL, want %d: a copy reached an insert", n, want)
	}
	e.checkRollups(t, int(total))
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
	l := e.startLoad(t, 5, 200, 7000)
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.ReadingsStored < 200 {
			return fmt.Errorf("writer %+v, want readings stored", st)
		}
		return nil
	})

	if err := e.ch.Stop(); err != nil {
		t.Fatalf("stopping ClickHouse: %v", err)
	}
	stopped, sentBefore := time.Now(), l.sent()
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
	if l.sent() <= sentBefore {
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
	t.Logf("outage %s: %d readings published during it; writer ok %s after restart", outage, l.sent()-sentBefore, time.Since(restarted).Round(time.Millisecond))
	// A little more load after the recovery, then the count.
	sent := l.sent()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if l.sent() < sent+200 {
			return errors.New("load not going on")
		}
		return nil
	})
	total := l.stop(t)
	e.checkExactlyOnce(t, w, l, total)
	t.Logf("%d readings stored exactly once; writer %+v", total, w.Status())
}
