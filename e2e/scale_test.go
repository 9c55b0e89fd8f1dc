package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

// TestTwoOfEachStageOneOfEachKilled runs one region with two ingests and
// two storage writers, coordinated by nothing but the broker's shared
// subscription and storage's durable JetStream consumer. Under load it
// kills one ingest and one writer with SIGKILL. The killed writer stays
// dead: the other takes over what it held once the ack wait ends. The
// killed ingest comes back, as the broker keeps its session and its share
// of the readings for it. Every reading ends in READINGS once and in
// ClickHouse once, counted without FINAL.
func TestTwoOfEachStageOneOfEachKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it under load; skipped with -short")
	}
	for _, b := range faultBrokers {
		t.Run(b.name, func(t *testing.T) { twoOfEachStage(t, b.start(t)) })
	}
}

func twoOfEachStage(t *testing.T, b faultBroker) {
	bin := buildTelemetry(t)
	ch := testharness.ClickHouse(t)
	region := startRegionNATS(t)
	ingests := []*ingestProc{
		newIngestProc(t, bin, b.url, region.URL(), "--instance", "a"),
		newIngestProc(t, bin, b.url, region.URL(), "--instance", "b"),
	}
	for _, in := range ingests {
		in.Start()
	}
	// A short ack wait, so that what the killed writer held comes back soon.
	args := []string{"storage", "--nats", region.URL(), "--region", faultRegion, "--clickhouse", ch.Addr(),
		"--batch-size", "200", "--flush-interval", "100ms", "--ack-wait", "3s", "--log-level", "warn"}
	writers := []*storageProc{startStorage(t, bin, args), startStorage(t, bin, args)}

	fleet, done := runFleet(t, devices.Config{Broker: b.url, Devices: 40, Rate: 1000, Duration: 16 * time.Second})
	// Both of each stage at work before the kills.
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		for i, in := range ingests {
			if n, err := metricValue(in.listen, "telemetry_ingest_accepted_total"); err != nil || n < 500 {
				return fmt.Errorf("ingest %d accepted %v readings (%v)", i, n, err)
			}
		}
		return nil
	})
	for _, w := range writers {
		w.waitStatus(t, func(st storage.Status) error {
			if st.ReadingsStored < 500 {
				return fmt.Errorf("writer stored %d readings", st.ReadingsStored)
			}
			return nil
		})
	}
	killedAt := fleet.Stats().Acked
	ingests[1].Kill()
	writers[1].kill(t)
	// Load goes on with one of each, then ingest b returns to its session.
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < killedAt+3000 && (b.holding == nil || !b.holding()) {
			return fmt.Errorf("%d readings published since the kills, and the broker holds no device back", s.Acked-killedAt)
		}
		return nil
	})
	ingests[1].Start()
	n := checkFleetStoredOnce(t, region.URL(), fleet, done)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var final, raw uint64
	testharness.CheckFor(t, 90*time.Second, 200*time.Millisecond, func() error {
		rows, err := storage.Ledger(ctx, conn, storage.LedgerOptions{})
		if err != nil {
			return err
		}
		var stored uint64
		for _, r := range rows {
			stored += r.Readings
		}
		if stored != uint64(n) {
			return fmt.Errorf("ClickHouse holds %d of %d readings", stored, n)
		}
		return nil
	})
	writers[0].waitStatus(t, func(st storage.Status) error {
		if st.ConsumerPending != 0 {
			return fmt.Errorf("consumer pending %d", st.ConsumerPending)
		}
		return nil
	})
	if err := conn.QueryRow(ctx, "SELECT count() FROM telemetry.readings FINAL").Scan(&final); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM telemetry.readings").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if raw != final {
		t.Errorf("%d rows without FINAL, %d with: a copy reached an insert", raw, final)
	}
	ledger, err := storage.Ledger(ctx, conn, storage.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]uint64{}
	for _, d := range fleet.Sent() {
		last[d.Device] = d.LastSeq
	}
	if len(ledger) != len(last) {
		t.Errorf("ledger has %d devices, want %d", len(ledger), len(last))
	}
	for _, r := range ledger {
		if want := last[r.Device]; r.MinSeq != 1 || r.MaxSeq != want || r.Readings != want || r.Missing != 0 {
			t.Errorf("ledger %+v, want seq 1..%d all stored", r, want)
		}
	}
	t.Logf("%d readings, %d of them published after the kills: READINGS and ClickHouse hold each once", n, uint64(n)-killedAt)
}
