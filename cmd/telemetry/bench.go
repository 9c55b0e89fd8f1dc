package main

import (
	"encoding/json"
	"io"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("bench", bench.Usage, stderr)
	var cfg bench.Config
	// Enough devices that one device's in-flight window (--max-inflight)
	// does not cap the rate: 5 readings/s each at 5,000/s.
	cfg.Fleet.RegisterFlags(fs, bench.DefaultDevices, bench.DefaultIDPrefix)
	fs.StringVar(&cfg.ClickHouse, "clickhouse", "", "ClickHouse native address the pipeline stores to; empty: the one storage's /api/status names (--storage-url)")
	fs.StringVar(&cfg.ClickHouseUser, "clickhouse-user", deploy.ClickHouseReaderUser, "ClickHouse user that reads what was stored; the read-only one is enough")
	cli.SecretVar(fs, &cfg.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseReaderPassword, "password of --clickhouse-user (default: the public demo default)")
	cli.RegionURLsVar(fs, &cfg.NATS, "nats", "region=URL,... of every region's NATS, to read READINGS and DEADLETTER (default: the demo's, as its dashboard user)")
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
	var agent bench.AgentFlags
	agent.Register(fs, &cfg)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logLevel := cli.LogLevelFlag(fs, "warn")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	cfg.MetricsURLs = cli.SplitList(*metrics)
	cfg.SkipStreamHops = !*streamHops
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()

	var rep bench.Report
	var hops *bench.Hops
	if agent.Serve {
		return agent.Run(ctx, cfg.Fleet, cfg.AgentToken, stderr, log)
	}
	if *inProcess {
		rep, hops, err = pipeline.Bench(ctx, cfg, *dataDir, stderr, log)
	} else {
		rep, hops, err = bench.Run(ctx, cfg, stderr, log)
	}
	if err != nil {
		return err
	}
	if *histLog != "" {
		if err := hops.WriteLogFile(*histLog); err != nil {
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
