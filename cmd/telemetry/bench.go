package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
	"github.com/telemetry-demo/telemetry/stream"
)

const benchSynopsis = `Run a fleet of simulated devices against a pipeline, wait until the pipeline
has drained, then read ClickHouse and every region's DEADLETTER stream and
print the conservation ledger: sent, acknowledged by the broker, stored
(distinct), dead-lettered by reason (and whether each hostile message of
--chaos got the reason it should), duplicates, lost (with the missing
(device, boot, seq) ranges); the latency of every hop as HDR histograms
(--histogram-log writes them in HdrHistogram's log format), what queued at
each stage and which one limited the run, and the pipeline process's CPU
and memory. Exits non-zero when anything was lost or misclassified. See
docs/BENCH.md.

With no address flags it targets the local demo (telemetry demo, make demo)
at its default addresses and users. --ceiling first runs the same fleet
against a bare broker with one plain subscriber, and reports the pipeline's
pace as a share of it. --demo starts an in-process pipeline instead (the
fleet then shares the process, so its CPU is not reported).`

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("bench", benchSynopsis, stderr)
	var cfg bench.Config
	var regions string
	// Enough devices that one device's in-flight window (--max-inflight)
	// does not cap the rate: 5 readings/s each at 5,000/s.
	fleetFlags(fs, &cfg.Fleet, &regions, 1000, "bench-")
	fs.StringVar(&cfg.ClickHouse, "clickhouse", "", "ClickHouse native address the pipeline stores to; empty: the one storage's /api/status names (--storage-url)")
	fs.StringVar(&cfg.ClickHouseUser, "clickhouse-user", deploy.ClickHouseReaderUser, "ClickHouse user that reads what was stored; the read-only one is enough")
	cli.SecretVar(fs, &cfg.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseReaderPassword, "password of --clickhouse-user (default: the public demo default)")
	natsFlag := fs.String("nats", "", "region=URL,... of every region's NATS, to read READINGS and DEADLETTER (default: the demo's, as its dashboard user)")
	fs.StringVar(&cfg.StorageURL, "storage-url", bench.DemoStorageURL, "storage's HTTP API: which ClickHouse it writes to, and (its /metrics) the pipeline process's CPU and memory")
	cli.SecretVar(fs, &cfg.StorageToken, "storage-token", "", "storage's --api-token, for a storage service on another machine (its API answers only on loopback without it)")
	metrics := fs.String("metrics", bench.DemoMetricsURL, "comma-separated /metrics URLs of the pipeline's parts (broker, ingest, storage), sampled for what queues at each stage; the demo's dashboard serves them all")
	fs.StringVar(&cfg.ProcessMetrics, "process-metrics", "", "/metrics URL of the process whose CPU and memory to report (default: --storage-url's /metrics, the demo's process); none: report none")
	streamHops := fs.Bool("stream-hops", true, "time the hops to JetStream, to the other regions and to the dashboard's feed, by reading READINGS in every region (three more consumers on the pipeline's servers, whose CPU counts in the pipeline's)")
	fs.BoolVar(&cfg.Ceiling, "ceiling", false, "first run the same fleet against a bare embedded broker with one plain subscriber, and report the pipeline's pace as a share of that ceiling")
	histLog := fs.String("histogram-log", "", "write every hop's latency histogram to this file, in HdrHistogram's log format (merges with other runs' logs)")
	inProcess := fs.Bool("demo", false, "run against an in-process pipeline instead of a running one")
	dataDir := fs.String("data-dir", "", "with --demo: where NATS and ClickHouse keep data (default: a temporary directory)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "give up waiting for storage after this long without progress")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if cfg.Fleet.Duration <= 0 {
		cfg.Fleet.Duration = bench.DefaultDuration
	}
	cfg.Fleet.Regions = cli.SplitList(regions)
	cfg.MetricsURLs = cli.SplitList(*metrics)
	cfg.SkipStreamHops = !*streamHops
	if *natsFlag != "" {
		urls, err := parseRegionURLs(*natsFlag)
		if err != nil {
			return err
		}
		cfg.NATS = urls
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()

	g, gctx := errgroup.WithContext(ctx)
	defer func() { g.Wait() }()
	if *inProcess {
		dir := *dataDir
		if dir == "" {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("telemetry-bench-%d", time.Now().UnixNano()))
			defer os.RemoveAll(dir)
		}
		p, err := pipeline.New(gctx, pipeline.Config{
			Regions: cfg.Fleet.Regions, Topology: stream.DefaultTopology(cfg.Fleet.Regions), MQTT: "127.0.0.1:0", DataDir: dir,
			MQTTPerAddress: max(broker.DefaultMaxConnsPerIP, cfg.Fleet.Devices+len(cfg.Fleet.Regions)),
			ClickHouse:     cfg.ClickHouse, StorageListen: "127.0.0.1:0", RequireStorage: true,
			Auth: pipeline.MQTTAuth{FleetSecret: cfg.Fleet.FleetSecret},
			Say:  func(f string, a ...any) { fmt.Fprintf(stderr, "bench: "+f+"\n", a...) },
		}, log)
		if err != nil {
			return err
		}
		pctx, pcancel := context.WithCancel(gctx)
		ran := make(chan struct{})
		g.Go(func() error { defer close(ran); return p.Run(pctx) })
		defer func() { pcancel(); <-ran; p.Close() }()
		cfg.Fleet.Broker = p.BrokerURL()
		cfg.NATS = map[string]string{}
		for _, r := range cfg.Fleet.Regions {
			cfg.NATS[r] = p.NATS().URLAs(r, "dashboard")
		}
		cfg.Gatherer = p.Gatherer()
		select {
		case cfg.ClickHouse = <-p.StorageUp():
		case <-gctx.Done():
			return g.Wait()
		}
	}

	rep, hops, err := bench.Run(gctx, cfg, stderr, log)
	if err != nil {
		return err
	}
	if *histLog != "" {
		if err := writeHistogramLog(*histLog, hops); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.Write(stdout); err != nil {
		return err
	}
	return rep.Err()
}

func writeHistogramLog(path string, hops *bench.Hops) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--histogram-log: %w", err)
	}
	if err := hops.WriteLog(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
