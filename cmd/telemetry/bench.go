package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

const benchSynopsis = `Run a fleet of simulated devices against a pipeline, wait until the pipeline
has drained, then read ClickHouse and print the conservation ledger: sent,
acknowledged by the broker, stored, and lost (with the missing (device,
boot, seq) ranges). Exits non-zero when anything acknowledged was lost.

With --demo it runs against an in-process pipeline (embedded broker and NATS,
ingest per region, storage, and a ClickHouse from --clickhouse or PATH).`

// BenchReport is the conservation ledger of one bench run (--json prints it).
type BenchReport struct {
	Devices      int     `json:"devices"`
	TargetRate   float64 `json:"target_rate"`     // readings/s asked for
	PublishSecs  float64 `json:"publish_seconds"` // how long the fleet published
	AchievedRate float64 `json:"achieved_rate"`   // sent / publish_seconds
	Sent         uint64  `json:"sent"`            // readings published
	Acked        uint64  `json:"acked"`           // acknowledged by the broker (PUBACK)
	Stored       uint64  `json:"stored"`          // distinct readings of this run in ClickHouse
	// Lost counts readings the broker acknowledged that never reached
	// ClickHouse: the pipeline's failures. Must be 0.
	Lost uint64 `json:"lost"`
	// Unconfirmed counts readings sent without a PUBACK (in flight when the
	// fleet stopped) that are not stored either: not the pipeline's loss.
	Unconfirmed uint64         `json:"unconfirmed"`
	Missing     []MissingRange `json:"missing,omitempty"`
	DrainSecs   float64        `json:"drain_seconds"` // from the fleet's stop until everything acknowledged was stored
	AckP50Ms    float64        `json:"ack_p50_ms"`
	AckP99Ms    float64        `json:"ack_p99_ms"`
}

// MissingRange is a run of a device's readings not found in storage.
type MissingRange struct {
	Device string `json:"device"`
	Boot   uint64 `json:"boot"`
	From   uint64 `json:"from_seq"`
	To     uint64 `json:"to_seq"`
}

var errLost = errors.New("readings were lost")

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("bench", benchSynopsis, stderr)
	var cfg devices.Config
	var regions string
	fleetFlags(fs, &cfg, &regions)
	chAddr := fs.String("clickhouse", "", "ClickHouse native address the pipeline stores to; with --demo, empty starts one found on PATH")
	inProcess := fs.Bool("demo", false, "run against an in-process pipeline instead of a running one")
	dataDir := fs.String("data-dir", "", "with --demo: where NATS and ClickHouse keep data (default: a temporary directory)")
	drain := fs.Duration("drain-timeout", 60*time.Second, "give up waiting for storage after this long without progress")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	// A boot of its own tells this run's readings from everything else.
	cfg.Boot = uint64(time.Now().UnixNano())
	cfg.Regions = cli.SplitList(regions)
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()

	g, gctx := errgroup.WithContext(ctx)
	defer func() { g.Wait() }()
	addr := *chAddr
	if *inProcess {
		dir := *dataDir
		if dir == "" {
			dir = filepath.Join(tempDir(), fmt.Sprintf("telemetry-bench-%d", time.Now().UnixNano()))
			defer os.RemoveAll(dir)
		}
		pctx, pcancel := context.WithCancel(gctx)
		defer pcancel()
		topo := stream.DefaultTopology(cfg.Regions)
		p, err := startPipeline(pctx, g, pipelineConfig{
			regions: cfg.Regions, topo: topo, mqtt: "127.0.0.1:0", dataDir: dir,
			clickhouse: addr, storageListen: "127.0.0.1:0", requireStore: true,
		}, func(f string, a ...any) { fmt.Fprintf(stderr, "bench: "+f+"\n", a...) }, log)
		if err != nil {
			return err
		}
		defer p.close()
		cfg.Broker = p.broker.URL()
		select {
		case addr = <-p.chAddr:
		case <-gctx.Done():
			return g.Wait()
		}
	}
	if addr == "" {
		return errors.New("--clickhouse is required (or --demo)")
	}
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: addr})
	if err != nil {
		return err
	}
	defer conn.Close()

	rep, err := bench(ctx, cfg, conn, *drain, stderr, log)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		writeBenchReport(stdout, rep)
	}
	if rep.Lost > 0 {
		return fmt.Errorf("%w: %d acknowledged readings are not in ClickHouse", errLost, rep.Lost)
	}
	return nil
}

func bench(ctx context.Context, cfg devices.Config, conn driver.Conn, drainTimeout time.Duration, progress io.Writer, log *slog.Logger) (BenchReport, error) {
	fleet, err := devices.New(cfg, log)
	if err != nil {
		return BenchReport{}, err
	}
	defer fleet.Close()
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fleet.Progress(pctx, progress, time.Second) }()
	runErr := fleet.Run(ctx)
	pcancel()
	<-done
	if runErr != nil {
		return BenchReport{}, fmt.Errorf("running the fleet: %w", runErr)
	}
	st := fleet.Stats()
	sent := fleet.Sent()
	rep := BenchReport{
		Devices: st.Devices, TargetRate: cfg.Rate, PublishSecs: st.Elapsed.Seconds(),
		Sent: st.Sent, Acked: st.Acked,
		AckP50Ms: ms(st.AckP50), AckP99Ms: ms(st.AckP99),
	}
	if rep.PublishSecs > 0 {
		rep.AchievedRate = float64(rep.Sent) / rep.PublishSecs
	}

	// Drain: wait until every acknowledged reading is stored, or storage
	// makes no progress for drainTimeout.
	start := time.Now()
	lastProgress, lastStored := time.Now(), uint64(0)
	var stored map[string]storage.LedgerRow
	for {
		stored, err = ledgerFor(ctx, conn, cfg.Boot)
		if err != nil {
			return rep, err
		}
		var n, ackedStored uint64
		for _, d := range sent {
			row := stored[d.Device]
			n += row.Readings
			ackedStored += min(row.Readings, d.Acked)
		}
		if n > lastStored {
			lastStored, lastProgress = n, time.Now()
		}
		fmt.Fprintf(progress, "bench: draining: %d of %d acknowledged readings stored\n", n, rep.Acked)
		if n >= rep.Acked || time.Since(lastProgress) > drainTimeout || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.DrainSecs = time.Since(start).Seconds()

	for _, d := range sent {
		row := stored[d.Device]
		rep.Stored += row.Readings
		if row.Readings == d.LastSeq && (d.LastSeq == 0 || row.MinSeq == 1 && row.MaxSeq == d.LastSeq) {
			continue
		}
		ranges, err := missingRanges(ctx, conn, d.Device, d.Boot, d.LastSeq)
		if err != nil {
			return rep, err
		}
		for _, r := range ranges {
			rep.Missing = append(rep.Missing, r)
			for seq := r.From; seq <= r.To; seq++ {
				if seq <= d.Acked {
					rep.Lost++
				} else {
					rep.Unconfirmed++
				}
			}
		}
	}
	return rep, nil
}

// ledgerFor returns the ledger rows of one boot, by device.
func ledgerFor(ctx context.Context, conn driver.Conn, boot uint64) (map[string]storage.LedgerRow, error) {
	rows, err := storage.Ledger(ctx, conn, storage.LedgerOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the ledger: %w", err)
	}
	out := map[string]storage.LedgerRow{}
	for _, r := range rows {
		if r.Boot == boot {
			out[r.Device] = r
		}
	}
	return out, nil
}

// missingRanges lists the runs of seq in 1..last that are not stored.
func missingRanges(ctx context.Context, conn driver.Conn, device string, boot, last uint64) ([]MissingRange, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT seq FROM telemetry.readings WHERE device = ? AND boot = ? ORDER BY seq`, device, boot)
	if err != nil {
		return nil, fmt.Errorf("listing stored readings of %s: %w", device, err)
	}
	defer rows.Close()
	var out []MissingRange
	next := uint64(1)
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		if seq > next {
			out = append(out, MissingRange{Device: device, Boot: boot, From: next, To: min(seq-1, last)})
		}
		next = seq + 1
	}
	if next <= last {
		out = append(out, MissingRange{Device: device, Boot: boot, From: next, To: last})
	}
	return out, rows.Err()
}

func writeBenchReport(w io.Writer, r BenchReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "conservation ledger\n")
	fmt.Fprintf(&b, "  devices            %d\n", r.Devices)
	fmt.Fprintf(&b, "  rate               %.1f/s achieved of %.1f/s asked, over %.1f s\n", r.AchievedRate, r.TargetRate, r.PublishSecs)
	fmt.Fprintf(&b, "  sent               %d\n", r.Sent)
	fmt.Fprintf(&b, "  acked by broker    %d   (PUBACK latency p50 %.1f ms, p99 %.1f ms)\n", r.Acked, r.AckP50Ms, r.AckP99Ms)
	fmt.Fprintf(&b, "  stored             %d   (drained in %.1f s)\n", r.Stored, r.DrainSecs)
	fmt.Fprintf(&b, "  unconfirmed        %d   (sent without PUBACK, not stored)\n", r.Unconfirmed)
	fmt.Fprintf(&b, "  LOST               %d\n", r.Lost)
	for i, m := range r.Missing {
		if i == 20 {
			fmt.Fprintf(&b, "    ... %d more ranges (see --json)\n", len(r.Missing)-20)
			break
		}
		fmt.Fprintf(&b, "    missing %s boot %d seq %d..%d\n", m.Device, m.Boot, m.From, m.To)
	}
	io.WriteString(w, b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
