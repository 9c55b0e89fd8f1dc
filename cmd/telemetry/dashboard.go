package main

import (
	"io"
	"maps"
	"slices"

	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/internal/cli"
)

func runDashboard(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("dashboard", "Serve the live dashboard: the page at /, snapshots over /ws and at /api/snapshot,\n/metrics and /healthz. It follows READINGS in its region (which holds every\nregion's readings) and every region's DEADLETTER.", stderr)
	var cfg dashboard.Config
	var regionURLs map[string]string
	cfg.RegisterFlags(fs, &regionURLs)
	var presenter control.Presenter
	presenter.RegisterFlags(fs)
	logLevel := cli.LogLevelFlag(fs, "info")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	urls := cfg.Standalone(regionURLs)
	cfg.Presenter, cfg.Join = presenter.On(), presenter.Phones.On()
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
	cli.LogNotices(log, cli.Exposure("the dashboard", d.Addr(), "set your own passwords", exposed))
	ctx, stop := cli.SignalContext(log)
	defer stop()
	stopScenarios, err := presenter.Start(ctx, d, cfg.Regions, urls, log)
	if err != nil {
		return err
	}
	defer stopScenarios()
	return d.Run(ctx)
}
