package main

import (
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

func runDashboard(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("dashboard", "Serve the live dashboard: the page at /, snapshots over /ws and at /api/snapshot,\n/metrics and /healthz. It follows READINGS in its region (which holds every\nregion's readings) and every region's DEADLETTER.", stderr)
	var cfg dashboard.Config
	regions := fs.String("regions", strings.Join(stream.DefaultRegions, ","), "the regions, in display order")
	fs.StringVar(&cfg.NATSURL, "nats", "nats://dashboard:dashboard@127.0.0.1:4222", "NATS URL of the region the dashboard reads from, as the read-only dashboard user (default: its public demo password)")
	fs.StringVar(&cfg.Domain, "region", "us-east", "the region (JetStream domain) of --nats")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the page and API; use 0.0.0.0:8080 to show it to other machines")
	allowedHosts := fs.String("allowed-hosts", "", "comma-separated host names (no scheme, no port) besides IP addresses and localhost that the dashboard answers to, e.g. a DNS name on the venue network; any other Host is refused (DNS-rebinding guard)")
	allowedOrigins := fs.String("allowed-origins", "", "comma-separated origins (https://host[:port]) of pages besides the dashboard's own that may open its websocket, e.g. behind a reverse proxy")
	fs.StringVar(&cfg.StorageURL, "storage-url", "http://127.0.0.1:8081", "base URL of the storage service's HTTP API; empty: storage is off")
	cli.SecretVar(fs, &cfg.StorageToken, "storage-token", "", "storage's --api-token, for a storage service on another machine (its API answers only on loopback without it)")
	regionURLs := fs.String("nats-regions", "", "region=URL for other regions' servers, to measure replication lag even when a region is cut off from the hub (default: ask through --nats), and to read READINGS from, in --regions order, while --region's server is gone")
	fs.DurationVar(&cfg.FailoverAfter, "failover-after", dashboard.DefaultFailoverAfter, "how long --region may be unusable before reading from another region, and must answer again before moving back")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	cfg.Regions = cli.SplitList(*regions)
	cfg.AllowedOrigins = cli.SplitList(*allowedOrigins)
	cfg.AllowedHosts = cli.SplitList(*allowedHosts)
	if cfg.StorageURL == "" {
		cfg.StorageOffReason = "the dashboard was started without --storage-url"
	}
	urls, err := parseRegionURLs(*regionURLs)
	if err != nil {
		return err
	}
	for _, r := range cfg.Regions {
		if u, ok := urls[r]; ok && r != cfg.Domain {
			cfg.Fallbacks = append(cfg.Fallbacks, dashboard.Fallback{Region: r, NATSURL: u})
		}
	}
	if _, ok := urls[cfg.Domain]; !ok {
		urls[cfg.Domain] = cfg.NATSURL
	}
	lag := stream.NewLagCollector(stream.StatusOf(urls, cfg.Regions), stream.StatusInterval)
	cfg.Replication = dashboard.ReplicationFrom(lag.Statuses, cfg.Regions)
	cfg.Alerts = stream.AlertsFrom(lag.Statuses)
	lagReg := prometheus.NewRegistry()
	lagReg.MustRegister(lag)
	cfg.Gatherer = lagReg
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	d, err := dashboard.New(cfg, log)
	if err != nil {
		return err
	}
	defer d.Close()
	var exposed []string
	if !cli.IsLoopback(d.Addr()) {
		exposed = cli.DemoNATSPasswords(slices.Sorted(maps.Values(urls))...)
	}
	for _, n := range cli.Exposure("the dashboard", d.Addr(), "set your own passwords", exposed) {
		if n.Warn {
			log.Warn(n.Text)
		} else {
			log.Info(n.Text)
		}
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return d.Run(ctx)
}
