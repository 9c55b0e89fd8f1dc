package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestCutRegionCountsTheWholeFleet cuts a region off while the pipeline's
// own fleet publishes at a load test's rate, built as the demo builds it,
// and checks that the ledger counts every reading of that fleet in the
// window, all stored, none lost.
func TestCutRegionCountsTheWholeFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline and ClickHouse")
	}
	testharness.RequireClickHouse(t)
	// 2,000 readings/s from 400 devices. Under the race detector, which
	// slows every part of the in-process pipeline several times over, a
	// quarter of that: there, on two cores, storage fell tens of thousands
	// of readings behind at the full rate, and us-east's source of eu-west
	// stayed down for over a minute after the heal, so the run measured the
	// machine rather than the ledger.
	numDevices, rate := 400, uint64(2000)
	if raceDetector() {
		numDevices, rate = 100, 500
	}
	const region = "eu-west"
	regions := stream.DefaultRegions
	log := slog.New(slog.DiscardHandler)
	console := &testharness.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	p, err := New(gctx, Config{
		Regions: regions, Topology: stream.DefaultTopology(regions), MQTT: "127.0.0.1:0",
		DataDir: t.TempDir(), StorageListen: "127.0.0.1:0", RequireStorage: true,
		Say: func(f string, a ...any) { fmt.Fprintf(console, f+"\n", a...) },
	}, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g.Go(func() error { return p.Run(gctx) })
	target := NewTarget(p, log)
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("pipeline: %v", err)
		}
		target.Close()
		p.Close()
		if t.Failed() {
			t.Logf("pipeline console:\n%s", console)
		}
	})
	select {
	case <-p.StorageUp():
	case <-time.After(90 * time.Second):
		t.Fatal("storage did not come up within 90 s")
	}

	// The fleet, as the demo makes it, at a load test's rate.
	fleet, err := devices.New(devices.Config{Broker: p.BrokerURL(), Regions: regions, Devices: numDevices, Rate: float64(rate), Seed: 1}, log)
	if err != nil {
		t.Fatal(err)
	}
	p.AttachFleet(fleet)
	g.Go(func() error { return fleet.Run(gctx) })
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Connected < numDevices || s.Acked < rate {
			return fmt.Errorf("fleet: %d of %d devices connected, %d readings acknowledged", s.Connected, numDevices, s.Acked)
		}
		return nil
	})

	// The fleet's own counters at the fault's two steps.
	var mu sync.Mutex
	at := map[string]devices.Stats{}
	runner, err := scenario.New(scenario.Config{
		Regions: regions, Window: 3 * time.Second, Lead: time.Second, Tail: time.Second,
		OnEvent: func(e scenario.Event) {
			s := fleet.Stats()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case strings.HasSuffix(e.Text, "cut off from the other regions"):
				at["cut"] = s
			case strings.HasSuffix(e.Text, "link healed"):
				at["healed"] = s
			}
		},
	}, target, log)
	if err != nil {
		t.Fatal(err)
	}
	g.Go(func() error { return runner.Run(gctx) })
	before := fleet.Stats()
	run, err := runner.Start(scenario.Request{Name: scenario.CutRegion, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	res, err := runner.Wait(wctx, run)
	if err != nil {
		t.Fatal(err)
	}
	after := fleet.Stats()
	var printed strings.Builder
	scenario.WriteResult(&printed, res)
	t.Logf("ledger:\n%s", printed.String())

	l := res.Ledger
	if !res.OK {
		// Where the readings stopped: replication and storage.
		st, _ := json.MarshalIndent(p.Status(ctx), "", "  ")
		t.Logf("regions: %s", st)
		if resp, err := http.Get(p.StorageURL() + "/api/status"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("storage: %s", b)
		}
	}
	if l == nil || l.Fleet == nil || !res.OK || res.Error != "" {
		t.Fatalf("result %+v: want an OK ledger of the fleet", res)
	}
	f := *l.Fleet
	if f.Devices != numDevices || l.Witnesses != nil {
		t.Errorf("counted %d devices of the fleet and witnesses %+v: want the %d devices, no witnesses", f.Devices, l.Witnesses, numDevices)
	}
	if l.Lost != 0 || len(l.Missing) != 0 || l.Unconfirmed != 0 {
		t.Errorf("lost %d, unconfirmed %d, missing %v: want nothing missing", l.Lost, l.Unconfirmed, l.Missing)
	}
	if f.Acked != f.Sent || f.Stored != f.Acked || l.Sent != f.Sent || l.Stored != l.Acked {
		t.Errorf("fleet %+v, ledger sent %d acked %d stored %d: want every reading of the window acknowledged and stored", f, l.Sent, l.Acked, l.Stored)
	}
	// Between the cut and the heal, every acknowledgement but those of
	// readings already in flight at the cut is of a reading of the window:
	// the ledger has at least those. It cannot have more than the fleet
	// sent from before the start to after the end.
	mu.Lock()
	cut, cutSeen := at["cut"]
	healed, healSeen := at["healed"]
	mu.Unlock()
	if !cutSeen || !healSeen {
		t.Fatalf("events %+v: want the cut and the heal", runner.Events())
	}
	floor := healed.Acked - cut.Acked - min(cut.InFlight, healed.Acked-cut.Acked)
	if floor < rate { // a second's worth: far more than any witnesses sent
		t.Fatalf("the fleet had %d readings acknowledged between the cut and the heal (%d in flight at the cut): too few to tell", healed.Acked-cut.Acked, cut.InFlight)
	}
	if f.Acked < floor {
		t.Errorf("the ledger counts %d acknowledged readings of the fleet; the fleet had %d acknowledged between the cut and the heal alone", f.Acked, floor)
	}
	if ceiling := after.Sent - before.Sent; f.Sent > ceiling {
		t.Errorf("the ledger counts %d readings sent; the fleet sent %d from before the start to the end", f.Sent, ceiling)
	}
	t.Logf("fleet: %d sent in the window (%d acknowledged between the cut and the heal, %d from before the start to the end); drained in %.1f s",
		f.Sent, floor, after.Sent-before.Sent, l.DrainSecs)

	// The ledger's queries: ranges in several chunks, partly stored.
	w, err := storage.Dial(p.StorageConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b, err := w.PrepareBatch(ctx, "INSERT INTO telemetry.readings (region, device_type, device, boot, seq, metric, value, ts, ts_ms)")
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{1, 2, 3, 5, 8} {
		if err := b.Append("eu-west", "thermostat", "gap-test", uint64(1), seq, "temperature_c", 20.5, time.Now(), uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	var ranges []ledger.Range
	for i := range 2 * ledgerChunk {
		ranges = append(ranges, ledger.Range{Device: fmt.Sprintf("gap-%05d", i), Boot: 1, From: 1, To: 10})
	}
	ranges = append(ranges, ledger.Range{Device: "gap-test", Boot: 1, From: 2, To: 10}, ledger.Range{Device: "gap-test", Boot: 2, From: 1, To: 10})
	n, err := target.Stored(ctx, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if k := len(ranges); len(n) != k || n[k-2] != 4 || n[k-1] != 0 || slices.ContainsFunc(n[:k-2], func(v uint64) bool { return v != 0 }) {
		t.Errorf("stored %v: want 4 for gap-test boot 1 from seq 2, 0 for the rest", n[len(n)-3:])
	}
	seqs, err := target.StoredSeqs(ctx, ranges[len(ranges)-2:])
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]uint64{{2, 3, 5, 8}, nil}; !reflect.DeepEqual(seqs, want) {
		t.Errorf("stored seqs %v, want %v", seqs, want)
	}
}

// raceDetector reports whether the test binary was built with -race.
func raceDetector() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}
