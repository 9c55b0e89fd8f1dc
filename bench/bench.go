package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// Errors a run's report can end in (Report.Err); the command's exit
// status is non-zero for each.
var (
	// ErrLost: readings the broker acknowledged are not in ClickHouse.
	ErrLost = errors.New("readings were lost")
	// ErrMisclassified: hostile messages were not dead-lettered under the
	// reason they should get, or valid readings were dead-lettered.
	ErrMisclassified = errors.New("hostile messages were not dead-lettered as expected")
	// ErrNothingListens: the pipeline the run targets is not there.
	ErrNothingListens = errors.New("nothing listens there")
)

// Err is what the report says went wrong, nil when it is OK.
func (r Report) Err() error {
	switch {
	case r.Lost > 0:
		return fmt.Errorf("%w: %d acknowledged readings are not in ClickHouse", ErrLost, r.Lost)
	case r.Hostile.Misclassified > 0 || r.Hostile.Missing > 0:
		return fmt.Errorf("%w: %d under another reason, %d acknowledged and not dead-lettered", ErrMisclassified, r.Hostile.Misclassified, r.Hostile.Missing)
	case len(r.RejectedReadings) > 0:
		return fmt.Errorf("%w: valid readings were dead-lettered: %v", ErrMisclassified, r.RejectedReadings)
	}
	return nil
}

// Run runs the fleet against the pipeline (after the bare broker, with
// Ceiling), waits until the pipeline has drained, and returns the report;
// hops holds every hop's histogram (Hops.WriteLog). Progress lines go to
// progress.
func Run(ctx context.Context, cfg Config, progress io.Writer, log *slog.Logger) (rep Report, hops *Hops, err error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, nil, err
	}
	cfg = cfg.withDefaults()
	if err := checkBroker(cfg.Fleet.Broker); err != nil {
		return Report{}, nil, err
	}
	if cfg.ClickHouse == "" {
		if cfg.ClickHouse, err = clickHouseOf(ctx, cfg.StorageURL, cfg.StorageToken); err != nil {
			return Report{}, nil, err
		}
	}
	conn, err := storage.DialHistory(storage.Config{ClickHouseAddr: cfg.ClickHouse, HistoryUser: cfg.ClickHouseUser, HistoryPassword: cfg.ClickHousePassword})
	if err != nil {
		return Report{}, nil, err
	}
	defer conn.Close()
	watched := cfg.watched()
	rs, conns, err := stream.Connect(cfg.NATS, watched, nats.MaxReconnects(-1))
	if err != nil {
		return Report{}, nil, fmt.Errorf("%w: NATS: %v (start the demo first: make demo; or give --nats)", ErrNothingListens, err)
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()

	var ceil *CeilingReport
	if cfg.Ceiling {
		fmt.Fprintf(progress, "bench: the same fleet against a bare broker first (--ceiling)\n")
		if ceil, err = ceiling(ctx, cfg.Fleet, log); err != nil {
			return Report{}, nil, err
		}
		fmt.Fprintf(progress, "bench: bare broker: %.0f readings/s; now the pipeline\n", ceil.Rate)
	}

	// A boot of its own tells this run's readings from everything else.
	cfg.Fleet.Boot = uint64(time.Now().UnixNano())
	hops = NewHops(deviceInterval(cfg.Fleet))
	cfg.Fleet.AckLatency = func(d time.Duration) { hops.Record(HopAck, d) }
	// With agents the fleet is built here (its devices, skews and chaos
	// cases are the union of the agents' parts) and run there.
	fleet, err := devices.New(cfg.Fleet, log)
	if err != nil {
		return Report{}, nil, err
	}
	defer fleet.Close()
	fc := fleet.Config()

	skews := map[string]int64{}
	for _, d := range fleet.Devices() {
		skews[d.Device] = d.ClockSkew.Milliseconds()
	}
	start := time.Now()
	// Every region given is watched, also those the fleet does not publish
	// to: a burst into one region is replicated to all.
	dls := make([]*deadLetters, 0, len(watched))
	for i, r := range watched {
		dl, err := openDeadLetters(ctx, r, cfg.NATS[r], fc.Boot, start.Add(-time.Second))
		if err != nil {
			return Report{}, nil, err
		}
		defer dl.close()
		dls = append(dls, dl)
		if cfg.SkipStreamHops {
			continue
		}
		w, err := watchReadings(ctx, r, cfg.NATS[r], i == 0, fc.IDPrefix, fc.Boot, skews, hops, log)
		if err != nil {
			return Report{}, nil, err
		}
		defer w.close()
	}

	smp := &sampler{regions: watched, rs: rs}
	switch {
	case cfg.Gatherer != nil:
		smp.pipeline = gathererMetrics(cfg.Gatherer)
	default:
		smp.pipeline = sumSources(cfg.MetricsURLs)
	}
	if cfg.ProcessMetrics != "" && cfg.ProcessMetrics != "none" && cfg.Gatherer == nil {
		smp.process = httpMetrics(cfg.ProcessMetrics)
	}
	sctx, stopSampling := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { smp.run(sctx); return nil })
	prefix := fleet.Config().IDPrefix
	dupsBefore := suppressedByDevice(ctx, smp.pipeline, prefix)
	var ran ranFleet = fleet
	var agents []AgentReport
	var runErr error
	if len(cfg.Agents) > 0 {
		ran, agents, runErr = runAgents(ctx, cfg, fleet, hops, progress)
	} else {
		pctx, stopProgress := context.WithCancel(ctx)
		g.Go(func() error { fleet.Progress(pctx, progress, time.Second); return nil })
		runErr = fleet.Run(ctx)
		stopProgress()
	}
	byDevice := map[string]ledger.Counts{}
	if runErr == nil {
		rep, err = account(ctx, cfg, ran, conn, dls, skews, hops, progress, byDevice)
		countAgents(agents, byDevice)
		rep.Agents = agents
	}
	if after := suppressedByDevice(ctx, smp.pipeline, prefix); after != nil {
		rep.Duplicates.ByDevice = ledger.Gained(after, dupsBefore)
	}
	stopSampling()
	g.Wait()
	if runErr != nil {
		return Report{}, nil, fmt.Errorf("running the fleet: %w", runErr)
	}
	if err != nil {
		return rep, hops, err
	}
	rep.Latency = hops.Summary()
	rep.Backlog = smp.peak
	rep.Pipeline = smp.processReport()
	if smp.processError != nil {
		rep.Problems = append(rep.Problems, "pipeline process not measured: "+smp.processError.Error())
	}
	if ceil != nil {
		ceil.Share = rep.StoredRate / max(ceil.Rate, 1e-9)
		rep.Ceiling = ceil
	}
	rep.Bottleneck = bottleneck(rep)
	return rep, hops, nil
}

// ranFleet is what account reads of a fleet that has run: a
// devices.Fleet, or the parts agents ran, merged (agentsRun).
type ranFleet interface {
	Config() devices.Config
	Stats() devices.Stats
	Sent() []devices.DeviceSent
	Hostile() []devices.DeviceHostile
	PublishStart() time.Time
	ChaosCase(index int, n uint64) int
}

// account waits for the pipeline to drain and builds the ledger; byDevice
// gets each device's counts.
func account(ctx context.Context, cfg Config, fleet ranFleet, conn driver.Conn, dls []*deadLetters, skews map[string]int64, hops *Hops, progress io.Writer, byDevice map[string]ledger.Counts) (Report, error) {
	fc := fleet.Config()
	st := fleet.Stats()
	sent := fleet.Sent()
	hostile := fleet.Hostile()
	rep := Report{
		Devices: st.Devices, IDPrefix: fc.IDPrefix, Boot: fc.Boot,
		TargetRate: fc.Rate, ReadingsPerMessage: fc.ReadingsPerMessage(), PublishSecs: st.Elapsed.Seconds(), RampUpSecs: fc.RampUp.Seconds(),
		Counts: ledger.Counts{Sent: st.Sent, Acked: st.Acked}, Skipped: st.Skipped,
		RejectedReadings: map[string]uint64{}, DeadLettered: map[string]uint64{},
		Missing: []ledger.Range{}, Problems: []string{},
		Duplicates: DuplicateReport{Sent: st.Duplicates, Resent: st.Resent},
		Behaviours: BehaviourReport{
			Reboots: st.Reboots, Boots: len(sent), Reordered: st.Reordered,
			ClockSkewMs: fc.ClockSkew.Milliseconds(), ConnectionsLost: st.ConnectionsLost, PublishErrors: st.Errors,
		},
		Hostile: HostileReport{Sent: st.Hostile, Acked: st.HostileAcked, ByReason: map[string]*ReasonLedger{}, Examples: []Misclassified{}},
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
	// DrainTimeout.
	drainStart := time.Now()
	lastProgress, lastCount := time.Now(), uint64(0)
	var stored map[deviceBoot]storage.LedgerRow
	var err error
	for {
		stored, err = ledgerFor(ctx, conn, fc.IDPrefix, boots)
		if err != nil {
			// ClickHouse may be down or still starting (a scenario's
			// outage): keep asking, within the drain timeout.
			if time.Since(lastProgress) > cfg.DrainTimeout || ctx.Err() != nil {
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
		if n >= rep.Acked && dead >= rep.Hostile.Acked || time.Since(lastProgress) > cfg.DrainTimeout || ctx.Err() != nil {
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
		c := ledger.Counts{Stored: row.Readings}
		if row.Readings != d.LastSeq || d.LastSeq != 0 && (row.MinSeq != 1 || row.MaxSeq != d.LastSeq) {
			ranges, err := missingRanges(ctx, conn, d.Device, d.Boot, d.LastSeq)
			if err != nil {
				return rep, err
			}
			for _, r := range ranges {
				rep.Missing = append(rep.Missing, r)
				for seq := r.From; seq <= r.To; seq++ {
					if seq <= d.Acked {
						c.Lost++
					} else {
						c.Unconfirmed++
					}
				}
			}
		}
		rep.Counts.Add(c)
		cur := byDevice[d.Device]
		cur.Add(c)
		byDevice[d.Device] = cur
	}

	accountHostile(&rep, fleet, hostile, dls, fc.Boot)
	for _, dl := range dls {
		for reason, n := range dl.byReason {
			rep.DeadLettered[reason] += n
		}
		for reason, n := range dl.rejectedReadings(fc.IDPrefix, boots) {
			rep.RejectedReadings[reason] += n
		}
	}

	lastStored, err := storedLatencies(ctx, conn, fc.IDPrefix, fc.Boot, skews, hops)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else if first := fleet.PublishStart(); !first.IsZero() && lastStored.After(first) {
		rep.StoredRate = float64(rep.Stored) / lastStored.Sub(first).Seconds()
	}
	if rep.Duplicates.UnmergedRows, err = unmergedRows(ctx, conn, fc.IDPrefix, fc.Boot); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	if cfg.Gatherer != nil {
		if mfs, err := gathererMetrics(cfg.Gatherer)(ctx); err == nil {
			if v, ok := sumOf(mfs, "telemetry_ingest_duplicates_total"); ok {
				n := uint64(v)
				rep.Duplicates.SuppressedByStream = &n
			}
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
	rep.OK = rep.Err() == nil
	return rep, nil
}

// checkBroker dials the broker's address once, to say plainly that
// nothing listens there rather than let every device time out.
func checkBroker(broker string) error {
	u, err := url.Parse(broker)
	if err != nil {
		return fmt.Errorf("broker %q: %w", broker, err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return fmt.Errorf("%w: no MQTT broker at %s (%v): start the demo first (make demo), or give --broker", ErrNothingListens, u.Host, err)
	}
	return c.Close()
}

// clickHouseOf asks storage's /api/status which ClickHouse it writes to.
func clickHouseOf(ctx context.Context, storageURL, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, storageURL+"/api/status", nil)
	if err != nil {
		return "", fmt.Errorf("storage URL %q: %w", storageURL, err)
	}
	httpserv.SetBearer(req, token)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: storage does not answer at %s (%v): start the demo first (make demo), or give --storage-url or --clickhouse", ErrNothingListens, redact.URL(storageURL), err)
	}
	defer resp.Body.Close()
	var st storage.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return "", fmt.Errorf("reading storage's status at %s: %w", storageURL, err)
	}
	if st.ClickHouse == "" {
		return "", fmt.Errorf("storage at %s does not say which ClickHouse it writes to (state %q): give --clickhouse", storageURL, st.State)
	}
	return st.ClickHouse, nil
}

// suppressedByDevice reads ingest's duplicates by device, for the devices
// whose id starts with prefix; nil when the metrics cannot be read.
func suppressedByDevice(ctx context.Context, src metricsSource, prefix string) map[string]uint64 {
	mfs, err := src(ctx)
	if err != nil {
		return nil
	}
	return byLabel(mfs, "telemetry_ingest_duplicates_by_device_total", "device", func(d string) bool { return strings.HasPrefix(d, prefix) })
}

// sumSources reads several /metrics endpoints as one: the parts of a
// pipeline that runs as separate processes. An endpoint that does not
// answer is left out of the sample.
func sumSources(urls []string) metricsSource {
	srcs := make([]metricsSource, len(urls))
	for i, u := range urls {
		srcs[i] = httpMetrics(u)
	}
	return func(ctx context.Context) (map[string]*dto.MetricFamily, error) {
		out := map[string]*dto.MetricFamily{}
		var errs []error
		for _, src := range srcs {
			mfs, err := src(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for name, mf := range mfs {
				if have, ok := out[name]; ok {
					have.Metric = append(have.Metric, mf.Metric...)
					continue
				}
				out[name] = mf
			}
		}
		if len(out) == 0 && len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return out, nil
	}
}
