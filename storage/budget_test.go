package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// budget is the READINGS byte limit of these tests: the smallest a
// topology takes, about 3,500 of the tests' readings.
const budget = 1 << 20

// readingsInfo is READINGS as the server has it now.
func (e *env) readingsInfo(t *testing.T) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, storage.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo() // fetched by Stream
}

// withBudget turns e's READINGS into the topology's, with a budget of
// bytes: the oldest readings make room for new ones.
func (e *env) withBudget(t *testing.T, bytes int64) {
	t.Helper()
	topo := stream.DefaultTopology([]string{region})
	topo.ReadingsMaxBytes = bytes
	topo.Storage = e.readingsInfo(t).Config.Storage
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.UpdateStream(ctx, topo.ReadingsConfig(region)); err != nil {
		t.Fatalf("applying the topology's READINGS: %v", err)
	}
}

// streamState is READINGS' state now.
func (e *env) streamState(t *testing.T) jetstream.StreamState { return e.readingsInfo(t).State }

// ledgerTotals adds up the ledger: readings stored and sequence numbers
// missing between each device's first and last stored.
func (e *env) ledgerTotals(t *testing.T) (stored, missing uint64, rows []storage.LedgerRow) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := storage.Ledger(ctx, e.conn, storage.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		stored += r.Readings
		missing += r.Missing
	}
	return stored, missing, rows
}

// interleave orders rs as a fleet sends them: seq 1 of every device, then
// seq 2, and so on.
func interleave(rs []protocol.Reading, devices int) []protocol.Reading {
	per := len(rs) / devices
	out := make([]protocol.Reading, 0, len(rs))
	for s := range per {
		for d := range devices {
			out = append(out, rs[d*per+s])
		}
	}
	return out
}

// TestStreamAtItsBudgetKeepsFlowing: READINGS reaches its byte limit
// while storage keeps up. The oldest readings, stored long ago, make room:
// readings keep being accepted and stored, none lost, none counted as
// discarded. (With DiscardNew, the policy before, the stream refused every
// new reading from there on.)
func TestStreamAtItsBudgetKeepsFlowing(t *testing.T) {
	e := newEnv(t)
	e.withBudget(t, budget)
	w := start(t, e.config())
	const devices, per = 20, 600 // 12,000 readings, about 3.5 budgets
	rs := interleave(readings(devices, per, 1), devices)
	for i := 0; i < len(rs); i += 500 {
		e.publish(t, rs[i:i+500], true)
		// Storage keeps up: never more than a chunk behind.
		want := uint64(i + 500)
		testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if st := w.Status(); st.ReadingsStored < want {
				return fmt.Errorf("stored %d of %d", st.ReadingsStored, want)
			}
			return nil
		})
	}
	e.waitStored(t, w, uint64(len(rs)*len(metricNames)))
	st := e.streamState(t)
	if st.FirstSeq <= 1 || st.Bytes > budget {
		t.Errorf("READINGS holds %d bytes from seq %d: want at most %d bytes, the oldest gone", st.Bytes, st.FirstSeq, budget)
	}
	stored, missing, _ := e.ledgerTotals(t)
	if stored != uint64(len(rs)) || missing != 0 {
		t.Errorf("ledger: %d stored, %d missing; want %d stored, none missing", stored, missing, len(rs))
	}
	if d := w.Status().Discarded; d != 0 {
		t.Errorf("storage counted %d readings discarded, want 0", d)
	}
}

// TestStorageDownPastTheBudget: storage is down while READINGS overruns
// its budget. The documented policy: the oldest readings make room, and
// those storage had not stored are lost, each counted. Once back, storage
// stores what the stream still holds and counts the gap: stored plus
// discarded is every reading sent, and the ledger's missing readings are
// exactly the discarded ones.
func TestStorageDownPastTheBudget(t *testing.T) {
	e := newEnv(t)
	e.withBudget(t, budget)
	const devices, per = 20, 600
	rs := interleave(readings(devices, per, 1), devices)

	w := start(t, e.config())
	e.publish(t, rs[:1000], true)
	e.waitStored(t, w, 1000*uint64(len(metricNames)))
	w.stop(t)

	e.publish(t, rs[1000:], true) // 11,000 readings, about 3 budgets
	if st := e.streamState(t); st.FirstSeq <= 1001 {
		t.Fatalf("READINGS starts at seq %d: the budget did not overrun", st.FirstSeq)
	}
	// `stream status`, the page and /metrics say so while storage is down.
	status := e.regionStatus(t)
	if status.Storage == nil || status.Storage.Dropped == 0 || !strings.Contains(status.Alert, "READINGS full in "+region) {
		t.Errorf("with storage down past the budget, stream status says storage %+v, alert %q", status.Storage, status.Alert)
	}

	w = start(t, e.config())
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st := w.Status()
		if st.ConsumerPending != 0 || st.ReadingsStored+st.Discarded < uint64(len(rs)-1000) {
			return fmt.Errorf("stored %d, discarded %d, pending %d", st.ReadingsStored, st.Discarded, st.ConsumerPending)
		}
		return nil
	})
	st := w.Status()
	stored, missing, _ := e.ledgerTotals(t)
	t.Logf("%d readings sent, %d stored, %d discarded unstored", len(rs), stored, st.Discarded)
	if st.Discarded == 0 {
		t.Fatalf("storage counted nothing discarded; ledger: %d stored, %d missing", stored, missing)
	}
	if stored+st.Discarded != uint64(len(rs)) {
		t.Errorf("%d stored + %d counted discarded = %d, want every one of %d readings", stored, st.Discarded, stored+st.Discarded, len(rs))
	}
	if missing != st.Discarded {
		t.Errorf("ledger misses %d readings, storage counted %d discarded", missing, st.Discarded)
	}
	if status := e.regionStatus(t); status.Alert != "" || status.Storage == nil || status.Storage.Unstored != 0 {
		t.Errorf("storage caught up, yet stream status says storage %+v, alert %q", status.Storage, status.Alert)
	}
}

// regionStatus is `telemetry stream status` of e's region.
func (e *env) regionStatus(t *testing.T) stream.RegionStatus {
	t.Helper()
	st := stream.Status(context.Background(), stream.Regions{region: e.js}, []string{region})
	if len(st) != 1 || !st[0].Reachable {
		t.Fatalf("stream status: %+v", st)
	}
	return st[0]
}

// TestGapsStillInTheStreamAreNotDiscards: a delivery the writer never
// gets (a fetch that gave up as the message arrived, on a starved machine)
// leaves a gap in the sequence it sees, and comes back as a redelivery
// after the ack wait. That is not a discard: the stream still holds it.
// Here a second client pulls from the writer's durable consumer now and
// then without acknowledging, taking messages from under the writer; every
// reading is stored and none is counted as dropped.
func TestGapsStillInTheStreamAreNotDiscards(t *testing.T) {
	e := newEnv(t)
	e.withBudget(t, 64<<20) // room for every reading: nothing can be dropped
	cfg := e.config()
	cfg.AckWait = time.Second // what the thief takes comes back soon
	// Small fetches: a writer asking for thousands at once takes every
	// message as it arrives and leaves the thief nothing.
	cfg.BatchSize = 10
	w := start(t, cfg)
	const devices, per = 20, 100 // 2,000 readings
	rs := interleave(readings(devices, per, 1), devices)
	e.publish(t, rs[:100], true)
	e.waitStored(t, w, 100*uint64(len(metricNames)))

	// The thief: the writer's consumer, pulled from elsewhere.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := e.js.Consumer(ctx, storage.DefaultStream, storage.DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	stolen := 0
	for i := 100; i < len(rs); i += 50 {
		// The thief's pull waits while the readings arrive.
		took := make(chan int, 1)
		go func() {
			n := 0
			if batch, err := cons.Fetch(3, jetstream.FetchMaxWait(200*time.Millisecond)); err == nil {
				for range batch.Messages() {
					n++ // never acknowledged: redelivered after the ack wait
				}
			}
			took <- n
		}()
		e.publish(t, rs[i:i+50], true)
		stolen += <-took
	}
	t.Logf("%d deliveries taken from under the writer", stolen)
	if stolen == 0 {
		t.Fatal("the thief took nothing: no gap to judge")
	}
	e.waitStored(t, w, uint64(len(rs)*len(metricNames)))
	if d := w.Status().Discarded; d != 0 {
		t.Errorf("storage counted %d readings discarded, none was: the stream holds all %d", d, len(rs))
	}
}
