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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

const benchSynopsis = `Run a fleet of simulated devices against a pipeline, wait until the pipeline
has drained, then read ClickHouse and every region's DEADLETTER stream and
print the conservation ledger: sent, acknowledged by the broker, stored
(distinct), dead-lettered by reason (and whether each hostile message of
--chaos got the reason it should), duplicates, lost (with the missing
(device, boot, seq) ranges), throughput and end-to-end latencies. Exits
non-zero when anything was lost or misclassified. See docs/BENCH.md.

Against a running pipeline give --broker, --clickhouse and --nats; with
--demo it runs against an in-process pipeline (embedded broker and NATS,
ingest per region, storage, and a ClickHouse from --clickhouse or PATH).`

// BenchReport is the conservation ledger of one bench run (--json prints
// it). docs/BENCH.md documents every field.
type BenchReport struct {
	OK           bool    `json:"ok"`
	Devices      int     `json:"devices"`
	IDPrefix     string  `json:"id_prefix"`
	Boot         uint64  `json:"boot"`
	TargetRate   float64 `json:"target_rate"`
	PublishSecs  float64 `json:"publish_seconds"`
	RampUpSecs   float64 `json:"ramp_up_seconds"`
	AchievedRate float64 `json:"achieved_rate"`
	Sent         uint64  `json:"sent"`
	Acked        uint64  `json:"acked"`
	Stored       uint64  `json:"stored"`
	Lost         uint64  `json:"lost"`
	Unconfirmed  uint64  `json:"unconfirmed"`
	Skipped      uint64  `json:"skipped"`
	// RejectedReadings counts this run's readings found in DEADLETTER, by
	// reason: valid readings the pipeline refused. Must be empty.
	RejectedReadings map[string]uint64 `json:"rejected_readings"`
	Missing          []MissingRange    `json:"missing"`
	DeadLettered     map[string]uint64 `json:"dead_lettered"`
	Hostile          HostileReport     `json:"hostile"`
	Duplicates       DuplicateReport   `json:"duplicates"`
	Behaviours       BehaviourReport   `json:"behaviours"`
	DrainSecs        float64           `json:"drain_seconds"`
	AckP50Ms         float64           `json:"ack_p50_ms"`
	AckP99Ms         float64           `json:"ack_p99_ms"`
	Latency          LatencyReport     `json:"latency"`
	Problems         []string          `json:"problems"`
}

// MissingRange is a run of a device's readings not found in storage.
type MissingRange struct {
	Device string `json:"device"`
	Boot   uint64 `json:"boot"`
	From   uint64 `json:"from_seq"`
	To     uint64 `json:"to_seq"`
}

// HostileReport accounts for the hostile messages of --chaos.
type HostileReport struct {
	Sent          uint64                   `json:"sent"`
	Acked         uint64                   `json:"acked"`
	DeadLettered  uint64                   `json:"dead_lettered"`
	AsExpected    uint64                   `json:"as_expected"`
	Misclassified uint64                   `json:"misclassified"`
	Missing       uint64                   `json:"missing"`
	Unconfirmed   uint64                   `json:"unconfirmed"`
	ByReason      map[string]*ReasonLedger `json:"by_reason"`
	Examples      []Misclassified          `json:"misclassified_examples"`
}

// ReasonLedger is the hostile messages expected under one reason.
type ReasonLedger struct {
	Expected      uint64         `json:"expected"`
	AsExpected    uint64         `json:"as_expected"`
	Misclassified uint64         `json:"misclassified"`
	Missing       uint64         `json:"missing"`
	Cases         map[string]int `json:"cases"`
}

// Misclassified is a hostile message dead-lettered under another reason
// than expected, or (Got empty) acknowledged and never dead-lettered.
type Misclassified struct {
	Marker   string `json:"marker"`
	Case     string `json:"case"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
	Detail   string `json:"detail,omitempty"`
}

// DuplicateReport says what became of readings delivered more than once.
type DuplicateReport struct {
	Sent               uint64  `json:"sent"`
	Resent             uint64  `json:"resent"`
	SuppressedByStream *uint64 `json:"suppressed_by_stream"`
	UnmergedRows       uint64  `json:"unmerged_rows"`
}

// BehaviourReport counts the device behaviours of the run.
type BehaviourReport struct {
	Reboots         uint64 `json:"reboots"`
	Boots           int    `json:"boots"`
	Reordered       uint64 `json:"reordered"`
	ClockSkewMs     int64  `json:"clock_skew_ms"`
	ConnectionsLost uint64 `json:"connections_lost"`
	PublishErrors   uint64 `json:"publish_errors"`
}

// LatencyReport holds the end-to-end latencies, in milliseconds, from the
// device's timestamp (the device's clock; skewed with --clock-skew).
type LatencyReport struct {
	ToIngest        Percentiles `json:"device_to_ingest"`
	ToStored        Percentiles `json:"device_to_stored"`
	ToStoredLower   Percentiles `json:"device_to_stored_lower"`
	ToDashboardFeed Percentiles `json:"device_to_dashboard_feed"`
	Note            string      `json:"note"`
}

// Percentiles of one latency, milliseconds.
type Percentiles struct {
	Count    uint64  `json:"count"`
	Negative uint64  `json:"negative"` // values below 0, counted as 0
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

const latencyNote = "From each reading's ts, less its device's clock skew. device_to_ingest: to ingest's receipt, millisecond resolution. " +
	"device_to_stored: to ClickHouse's stored_at, a DateTime of whole seconds, so only bounds are known: device_to_stored is the upper bound (stored_at+1s), device_to_stored_lower the lower (stored_at); the truth lies between, 1 s apart. " +
	"device_to_dashboard_feed: ts to the bench receiving the reading from the home region's READINGS stream, which the dashboard consumes (other regions' readings after replication). " +
	"All share one host clock unless the pipeline runs elsewhere."

var (
	errLost          = errors.New("readings were lost")
	errMisclassified = errors.New("hostile messages were not dead-lettered as expected")
)

// benchOptions are the bench's own settings beside the fleet's.
type benchOptions struct {
	natsURLs     map[string]string // region -> URL, for DEADLETTER and the dashboard feed
	drainTimeout time.Duration
	// gather, when set, reads the pipeline's metrics (--demo): JetStream
	// duplicates suppressed by ingest.
	gather prometheus.Gatherer
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("bench", benchSynopsis, stderr)
	var cfg devices.Config
	var regions string
	// Enough devices that one device's in-flight window (--max-inflight)
	// does not cap the rate: 5 readings/s each at 5,000/s.
	fleetFlags(fs, &cfg, &regions, 1000, "bench-")
	chAddr := fs.String("clickhouse", "", "ClickHouse native address the pipeline stores to; with --demo, empty starts one found on PATH")
	chUser := fs.String("clickhouse-user", deploy.ClickHouseReaderUser, "ClickHouse user that reads what was stored; the read-only one is enough")
	var chPassword string
	cli.SecretVar(fs, &chPassword, "clickhouse-password", deploy.DemoClickHouseReaderPassword, "password of --clickhouse-user (default: the public demo default)")
	natsFlag := fs.String("nats", "", "region=URL,... of every region's NATS, to read DEADLETTER (required unless --demo), e.g. us-east=nats://dashboard:dashboard@127.0.0.1:4222 (reading needs no more than the dashboard user may do)")
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
	opts := benchOptions{drainTimeout: *drain, natsURLs: map[string]string{}}
	for _, kv := range cli.SplitList(*natsFlag) {
		r, u, ok := strings.Cut(kv, "=")
		if !ok || !protocol.ValidName(r) || u == "" {
			return fmt.Errorf("--nats %q: want region=URL,... e.g. us-east=nats://127.0.0.1:4222", kv)
		}
		opts.natsURLs[r] = u
	}
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
			mqttAuth: mqttAuth{devicePassword: cfg.Password},
		}, func(f string, a ...any) { fmt.Fprintf(stderr, "bench: "+f+"\n", a...) }, log)
		if err != nil {
			return err
		}
		defer p.close()
		cfg.Broker = p.broker.URL()
		for _, r := range cfg.Regions {
			// Reading DEADLETTER and READINGS needs no more than the
			// dashboard's user may do.
			opts.natsURLs[r] = p.nats.URLAs(r, "dashboard")
		}
		opts.gather = p.gatherers
		select {
		case addr = <-p.chAddr:
		case <-gctx.Done():
			return g.Wait()
		}
	}
	if addr == "" {
		return errors.New("--clickhouse is required (or --demo)")
	}
	for _, r := range cfg.Regions {
		if opts.natsURLs[r] == "" {
			return fmt.Errorf("no NATS URL for region %s: give --nats %s=nats://host:port,... (or --demo)", r, r)
		}
	}
	conn, err := storage.DialHistory(storage.Config{ClickHouseAddr: addr, HistoryUser: *chUser, HistoryPassword: chPassword})
	if err != nil {
		return err
	}
	defer conn.Close()

	rep, err := bench(gctx, cfg, conn, opts, stderr, log)
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
	switch {
	case rep.Lost > 0:
		return fmt.Errorf("%w: %d acknowledged readings are not in ClickHouse", errLost, rep.Lost)
	case rep.Hostile.Misclassified > 0 || rep.Hostile.Missing > 0:
		return fmt.Errorf("%w: %d under another reason, %d acknowledged and not dead-lettered", errMisclassified, rep.Hostile.Misclassified, rep.Hostile.Missing)
	case len(rep.RejectedReadings) > 0:
		return fmt.Errorf("%w: valid readings were dead-lettered: %v", errMisclassified, rep.RejectedReadings)
	}
	return nil
}

// bench runs the fleet, waits for the pipeline to drain and builds the
// report.
func bench(ctx context.Context, cfg devices.Config, conn driver.Conn, opts benchOptions, progress io.Writer, log *slog.Logger) (BenchReport, error) {
	fleet, err := devices.New(cfg, log)
	if err != nil {
		return BenchReport{}, err
	}
	defer fleet.Close()
	cfg = fleet.Config()

	// Readers of every region's DEADLETTER and of the dashboard's feed,
	// from now on.
	start := time.Now()
	dls := make([]*deadLetters, 0, len(cfg.Regions))
	for _, r := range cfg.Regions {
		dl, err := openDeadLetters(ctx, r, opts.natsURLs[r], cfg.Boot, start.Add(-time.Second))
		if err != nil {
			return BenchReport{}, err
		}
		defer dl.close()
		dls = append(dls, dl)
	}
	skews := map[string]int64{}
	for _, d := range fleet.Devices() {
		skews[d.Device] = d.ClockSkew.Milliseconds()
	}
	feed, err := watchFeed(ctx, cfg.Regions[0], opts.natsURLs[cfg.Regions[0]], cfg.IDPrefix, cfg.Boot, skews, log)
	if err != nil {
		return BenchReport{}, err
	}
	defer feed.close()

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
	hostile := fleet.Hostile()
	rep := BenchReport{
		Devices: st.Devices, IDPrefix: cfg.IDPrefix, Boot: cfg.Boot,
		TargetRate: cfg.Rate, PublishSecs: st.Elapsed.Seconds(), RampUpSecs: cfg.RampUp.Seconds(),
		Sent: st.Sent, Acked: st.Acked, Skipped: st.Skipped,
		AckP50Ms: ms(st.AckP50), AckP99Ms: ms(st.AckP99),
		RejectedReadings: map[string]uint64{}, DeadLettered: map[string]uint64{},
		Missing: []MissingRange{}, Problems: []string{},
		Duplicates: DuplicateReport{Sent: st.Duplicates, Resent: st.Resent},
		Behaviours: BehaviourReport{
			Reboots: st.Reboots, Boots: len(sent), Reordered: st.Reordered,
			ClockSkewMs: cfg.ClockSkew.Milliseconds(), ConnectionsLost: st.ConnectionsLost, PublishErrors: st.Errors,
		},
		Hostile: HostileReport{Sent: st.Hostile, Acked: st.HostileAcked, ByReason: map[string]*ReasonLedger{}, Examples: []Misclassified{}},
		Latency: LatencyReport{Note: latencyNote},
	}
	// Over the time at full rate: a ramp-up publishes as much as half its
	// length at full rate.
	if full := rep.PublishSecs - rep.RampUpSecs/2; full > 0 {
		rep.AchievedRate = float64(st.Sent+st.Hostile) / full
	}
	boots := map[uint64]bool{}
	for _, d := range sent {
		boots[d.Boot] = true
	}

	// Drain: wait until every acknowledged reading is stored and every
	// acknowledged hostile message dead-lettered, or nothing moves for
	// drainTimeout.
	drainStart := time.Now()
	lastProgress, lastCount := time.Now(), uint64(0)
	var stored map[deviceBoot]storage.LedgerRow
	for {
		stored, err = ledgerFor(ctx, conn, cfg.IDPrefix, boots)
		if err != nil {
			// ClickHouse may be down or still starting (a scenario's
			// outage): keep asking, within the drain timeout.
			if time.Since(lastProgress) > opts.drainTimeout || ctx.Err() != nil {
				return rep, err
			}
			fmt.Fprintf(progress, "bench: draining: %v; retrying\n", err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		var n uint64
		for _, r := range stored {
			n += r.Readings
		}
		var dead uint64
		for _, dl := range dls {
			if err := dl.poll(ctx); err != nil {
				return rep, err
			}
			dead += uint64(len(dl.hostile))
		}
		if n+dead > lastCount {
			lastCount, lastProgress = n+dead, time.Now()
		}
		fmt.Fprintf(progress, "bench: draining: %d of %d acknowledged readings stored, %d of %d acknowledged hostile messages dead-lettered\n",
			n, rep.Acked, dead, rep.Hostile.Acked)
		if n >= rep.Acked && dead >= rep.Hostile.Acked || time.Since(lastProgress) > opts.drainTimeout || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.DrainSecs = time.Since(drainStart).Seconds()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	for _, d := range sent {
		row := stored[deviceBoot{d.Device, d.Boot}]
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

	accountHostile(&rep, fleet, hostile, dls, cfg.Boot)
	for _, dl := range dls {
		for reason, n := range dl.byReason {
			rep.DeadLettered[reason] += n
		}
		for reason, n := range dl.rejectedReadings(cfg.IDPrefix, boots) {
			rep.RejectedReadings[reason] += n
		}
	}

	if err := latencies(ctx, conn, cfg.IDPrefix, cfg.Boot, skews, &rep); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	rep.Latency.ToDashboardFeed = feed.hist.percentiles()
	if opts.gather != nil {
		if n, err := counterSum(opts.gather, "telemetry_ingest_duplicates_total"); err == nil {
			rep.Duplicates.SuppressedByStream = &n
		}
	}
	if rep.Lost > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d acknowledged readings are not in ClickHouse", rep.Lost))
	}
	if rep.Hostile.Misclassified > 0 || rep.Hostile.Missing > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("hostile messages: %d dead-lettered under another reason, %d acknowledged and not dead-lettered", rep.Hostile.Misclassified, rep.Hostile.Missing))
	}
	if len(rep.RejectedReadings) > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("valid readings dead-lettered: %v", rep.RejectedReadings))
	}
	rep.OK = rep.Lost == 0 && rep.Hostile.Misclassified == 0 && rep.Hostile.Missing == 0 && len(rep.RejectedReadings) == 0
	return rep, nil
}

// accountHostile checks every hostile message the fleet sent against what
// the DEADLETTER streams hold.
func accountHostile(rep *BenchReport, fleet *devices.Fleet, hostile []devices.DeviceHostile, dls []*deadLetters, run uint64) {
	cases := devices.ChaosCases()
	for _, h := range hostile {
		for n := uint64(1); n <= h.Sent; n++ {
			k := fleet.ChaosCase(h.Index, n)
			c := cases[k]
			m := devices.ChaosMarker{Run: run, Device: h.Index, N: n, Case: k}
			led := rep.Hostile.ByReason[string(c.Reason)]
			if led == nil {
				led = &ReasonLedger{Cases: map[string]int{}}
				rep.Hostile.ByReason[string(c.Reason)] = led
			}
			var got *deadLetter
			for _, dl := range dls {
				if d, ok := dl.hostile[m]; ok {
					got = &d
					break
				}
			}
			switch {
			case got == nil && n > h.Acked:
				rep.Hostile.Unconfirmed++
				continue
			case got == nil:
				rep.Hostile.Missing++
				led.Missing++
				led.Expected++
				rep.addExample(Misclassified{Marker: m.String(), Case: c.Name, Expected: string(c.Reason)})
				continue
			}
			led.Expected++
			led.Cases[c.Name]++
			rep.Hostile.DeadLettered++
			if got.reason == string(c.Reason) {
				led.AsExpected++
				rep.Hostile.AsExpected++
				continue
			}
			led.Misclassified++
			rep.Hostile.Misclassified++
			rep.addExample(Misclassified{Marker: m.String(), Case: c.Name, Expected: string(c.Reason), Got: got.reason, Detail: got.detail})
		}
	}
}

func (r *BenchReport) addExample(m Misclassified) {
	if len(r.Hostile.Examples) < 20 {
		r.Hostile.Examples = append(r.Hostile.Examples, m)
	}
}

type deviceBoot struct {
	device string
	boot   uint64
}

// ledgerFor returns the ledger rows of the given boots of devices starting
// with prefix.
func ledgerFor(ctx context.Context, conn driver.Conn, prefix string, boots map[uint64]bool) (map[deviceBoot]storage.LedgerRow, error) {
	rows, err := storage.Ledger(ctx, conn, storage.LedgerOptions{DevicePrefix: prefix})
	if err != nil {
		return nil, fmt.Errorf("reading the ledger: %w", err)
	}
	out := map[deviceBoot]storage.LedgerRow{}
	for _, r := range rows {
		if boots[r.Boot] {
			out[deviceBoot{r.Device, r.Boot}] = r
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

// latencies reads, for each of the run's readings (its first receipt and
// first row), the device-to-ingest and device-to-stored latencies from
// ClickHouse, taking each device's clock skew out of its ts.
func latencies(ctx context.Context, conn driver.Conn, prefix string, run uint64, skews map[string]int64, rep *BenchReport) error {
	rows, err := conn.Query(ctx, `SELECT device, any(ts_ms), min(received_ms), toUInt32(min(stored_at))
FROM telemetry.readings
WHERE device LIKE ? AND boot >= ?
GROUP BY device, boot, seq`, prefix+"%", run)
	if err != nil {
		return fmt.Errorf("reading latencies from ClickHouse: %w", err)
	}
	defer rows.Close()
	toIngest, storedLow, storedHigh := newLatencyHist(), newLatencyHist(), newLatencyHist()
	for rows.Next() {
		var (
			device           string
			tsMS, receivedMS uint64
			storedAt         uint32
		)
		if err := rows.Scan(&device, &tsMS, &receivedMS, &storedAt); err != nil {
			return fmt.Errorf("reading latencies from ClickHouse: %w", err)
		}
		measured := int64(tsMS) - skews[device]
		if receivedMS > 0 {
			toIngest.record(int64(receivedMS) - measured)
		}
		// stored_at is whole seconds: the row was stored in
		// [storedAt, storedAt+1s).
		storedLow.record(int64(storedAt)*1000 - measured)
		storedHigh.record(int64(storedAt)*1000 + 1000 - measured)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading latencies from ClickHouse: %w", err)
	}
	rep.Latency.ToIngest = toIngest.percentiles()
	rep.Latency.ToStored = storedHigh.percentiles()
	rep.Latency.ToStoredLower = storedLow.percentiles()

	var n, distinct uint64
	if err := conn.QueryRow(ctx, `SELECT count(), uniqExact(device, boot, seq, metric) FROM telemetry.readings WHERE device LIKE ? AND boot >= ?`, prefix+"%", run).Scan(&n, &distinct); err != nil {
		return fmt.Errorf("counting duplicate rows: %w", err)
	}
	rep.Duplicates.UnmergedRows = n - distinct
	return nil
}

// latencyHist is a histogram of latencies in milliseconds. Values below 0
// (clocks apart, or stored_at's floor) count as 0, and are counted.
type latencyHist struct {
	mu       sync.Mutex
	h        *hdrhistogram.Histogram
	negative uint64
}

const maxLatencyMS = int64(time.Hour / time.Millisecond)

func newLatencyHist() *latencyHist {
	return &latencyHist{h: hdrhistogram.New(0, maxLatencyMS, 3)}
}

func (l *latencyHist) record(ms int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ms < 0 {
		l.negative++
	}
	_ = l.h.RecordValue(min(max(ms, 0), maxLatencyMS)) // in range: cannot fail
}

func (l *latencyHist) percentiles() Percentiles {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: uint64(l.h.TotalCount()), Negative: l.negative,
		P50: float64(l.h.ValueAtQuantile(50)), P90: float64(l.h.ValueAtQuantile(90)),
		P99: float64(l.h.ValueAtQuantile(99)), Max: float64(l.h.Max()),
	}
}

// counterSum adds up every series of a counter family.
func counterSum(g prometheus.Gatherer, name string) (uint64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return uint64(sum), nil
}

// deadLetters reads one region's DEADLETTER stream from a start time on,
// keeping what it has read between polls.
type deadLetters struct {
	region   string
	run      uint64 // hostile messages of other runs are ignored
	nc       *nats.Conn
	js       jetstream.JetStream
	cons     jetstream.Consumer
	hostile  map[devices.ChaosMarker]deadLetter // first dead letter of each hostile message
	byReason map[string]uint64                  // this run's dead letters (hostile and readings), by reason
	others   []deadLetter                       // dead letters without a marker of any run
	lastSeq  uint64
}

type deadLetter struct {
	reason, detail string
	reading        protocol.Reading // when the body decodes
	decoded        bool
}

func openDeadLetters(ctx context.Context, region, url string, run uint64, since time.Time) (*deadLetters, error) {
	nc, err := nats.Connect(url, nats.Name("telemetry-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS of %s at %s: %w", region, redact.URL(url), err)
	}
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, stream.DeadLetterStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading %s in %s: %w (is the topology applied?)", stream.DeadLetterStream, region, err)
	}
	return &deadLetters{region: region, run: run, nc: nc, js: js, cons: cons,
		hostile: map[devices.ChaosMarker]deadLetter{}, byReason: map[string]uint64{}}, nil
}

func (d *deadLetters) close() { d.nc.Close() }

// poll reads what the stream gained since the last poll.
func (d *deadLetters) poll(ctx context.Context) error {
	s, err := d.js.Stream(ctx, stream.DeadLetterStream)
	if err != nil {
		return fmt.Errorf("dead letters of %s: %w", d.region, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("dead letters of %s: %w", d.region, err)
	}
	target := info.State.LastSeq
	for d.lastSeq < target {
		batch, err := d.cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("dead letters of %s: %w", d.region, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				d.lastSeq = md.Sequence.Stream
			}
			d.add(m)
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return fmt.Errorf("dead letters of %s: %w", d.region, batch.Error())
		}
		if n == 0 {
			break // nothing more since the start time
		}
	}
	return nil
}

func (d *deadLetters) add(m jetstream.Msg) {
	h := m.Headers()
	dl := deadLetter{reason: h.Get(ingest.HeaderReason), detail: h.Get(ingest.HeaderDetail)}
	if mk, ok := devices.FindChaosMarker(m.Data()); ok {
		if mk.Run != d.run {
			return // another fleet's
		}
		if _, seen := d.hostile[mk]; !seen {
			d.hostile[mk] = dl
			d.byReason[dl.reason]++ // counted once per message however often delivered
		}
		return
	}
	if r, err := protocol.Unmarshal(m.Data()); err == nil {
		dl.reading, dl.decoded = r, true
	}
	d.others = append(d.others, dl)
}

// rejectedReadings counts, by reason, dead letters that are readings of
// the run's devices and boots: valid readings the pipeline refused.
func (d *deadLetters) rejectedReadings(prefix string, boots map[uint64]bool) map[string]uint64 {
	out := map[string]uint64{}
	for _, dl := range d.others {
		if dl.decoded && strings.HasPrefix(dl.reading.Device, prefix) && boots[dl.reading.Boot] {
			out[dl.reason]++
			d.byReason[dl.reason]++
		}
	}
	return out
}

// feedWatcher measures device timestamp to arrival in the home region's
// READINGS stream, which is what the dashboard consumes.
type feedWatcher struct {
	nc   *nats.Conn
	cc   jetstream.ConsumeContext
	hist *latencyHist
}

func watchFeed(ctx context.Context, region, url, prefix string, run uint64, skews map[string]int64, log *slog.Logger) (*feedWatcher, error) {
	nc, err := nats.Connect(url, nats.Name("telemetry-bench-feed"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS of %s: %w", region, err)
	}
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, stream.ReadingsStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading %s in %s: %w", stream.ReadingsStream, region, err)
	}
	w := &feedWatcher{nc: nc, hist: newLatencyHist()}
	w.cc, err = cons.Consume(func(m jetstream.Msg) {
		r, err := protocol.Unmarshal(m.Data())
		if err != nil || !strings.HasPrefix(r.Device, prefix) || r.Boot < run {
			return
		}
		w.hist.record(time.Now().UnixMilli() - (r.TS - skews[r.Device]))
	}, jetstream.PullMaxMessages(4096), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Debug("dashboard feed consumer", "err", err)
	}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

func (w *feedWatcher) close() {
	w.cc.Stop()
	w.nc.Close()
}

func writeBenchReport(w io.Writer, r BenchReport) {
	var b strings.Builder
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "conservation ledger: %s\n", verdict)
	fmt.Fprintf(&b, "  devices            %d (ids %s*, boot %d)\n", r.Devices, r.IDPrefix, r.Boot)
	fmt.Fprintf(&b, "  rate               %.1f/s achieved of %.1f/s asked, over %.1f s\n", r.AchievedRate, r.TargetRate, r.PublishSecs)
	fmt.Fprintf(&b, "  sent               %d readings   (%d due readings skipped: device outbox full)\n", r.Sent, r.Skipped)
	fmt.Fprintf(&b, "  acked by broker    %d   (PUBACK latency p50 %.1f ms, p99 %.1f ms)\n", r.Acked, r.AckP50Ms, r.AckP99Ms)
	fmt.Fprintf(&b, "  stored (distinct)  %d   (drained in %.1f s)\n", r.Stored, r.DrainSecs)
	fmt.Fprintf(&b, "  unconfirmed        %d   (sent without PUBACK, not stored)\n", r.Unconfirmed)
	fmt.Fprintf(&b, "  LOST               %d\n", r.Lost)
	for i, m := range r.Missing {
		if i == 20 {
			fmt.Fprintf(&b, "    ... %d more ranges (see --json)\n", len(r.Missing)-20)
			break
		}
		fmt.Fprintf(&b, "    missing %s boot %d seq %d..%d\n", m.Device, m.Boot, m.From, m.To)
	}
	fmt.Fprintf(&b, "  duplicates         %d sent on purpose, %d resent after reconnecting", r.Duplicates.Sent, r.Duplicates.Resent)
	if r.Duplicates.SuppressedByStream != nil {
		fmt.Fprintf(&b, "; %d suppressed by JetStream", *r.Duplicates.SuppressedByStream)
	}
	fmt.Fprintf(&b, "; %d rows not yet merged in ClickHouse (FINAL hides them)\n", r.Duplicates.UnmergedRows)
	fmt.Fprintf(&b, "  behaviours         %d reboots (%d boots), %d reordered, clock skew up to %d ms, %d connections lost\n",
		r.Behaviours.Reboots, r.Behaviours.Boots, r.Behaviours.Reordered, r.Behaviours.ClockSkewMs, r.Behaviours.ConnectionsLost)
	h := r.Hostile
	fmt.Fprintf(&b, "  hostile            %d sent, %d acked, %d dead-lettered: %d as expected, %d MISCLASSIFIED, %d MISSING, %d unconfirmed\n",
		h.Sent, h.Acked, h.DeadLettered, h.AsExpected, h.Misclassified, h.Missing, h.Unconfirmed)
	reasons := make([]string, 0, len(h.ByReason))
	for reason := range h.ByReason {
		reasons = append(reasons, reason)
	}
	sort.Strings(reasons)
	for _, reason := range reasons {
		l := h.ByReason[reason]
		fmt.Fprintf(&b, "    %-16s expected %6d  as expected %6d  misclassified %d  missing %d\n", reason, l.Expected, l.AsExpected, l.Misclassified, l.Missing)
	}
	for _, e := range h.Examples {
		fmt.Fprintf(&b, "    ! %s (%s): expected %s, got %q %s\n", e.Case, e.Marker, e.Expected, e.Got, e.Detail)
	}
	if len(r.RejectedReadings) > 0 {
		fmt.Fprintf(&b, "  REJECTED READINGS  %v\n", r.RejectedReadings)
	}
	lat := func(name string, p Percentiles) {
		fmt.Fprintf(&b, "  %-18s p50 %.0f ms  p90 %.0f ms  p99 %.0f ms  max %.0f ms  (%d readings)\n", name, p.P50, p.P90, p.P99, p.Max, p.Count)
	}
	lat("device -> ingest", r.Latency.ToIngest)
	lat("device -> stored", r.Latency.ToStored)
	lat("  (lower bound)", r.Latency.ToStoredLower)
	lat("device -> feed", r.Latency.ToDashboardFeed)
	fmt.Fprintf(&b, "    (stored: ClickHouse's stored_at has whole seconds: the truth is between the bounds; see docs/BENCH.md)\n")
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  PROBLEM: %s\n", p)
	}
	io.WriteString(w, b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
