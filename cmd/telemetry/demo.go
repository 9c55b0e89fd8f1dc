package main

import (
	"io"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
)

const demoSynopsis = `Run the whole pipeline in one process: an embedded MQTT broker, one embedded
NATS JetStream server per region joined through a hub, ingest per region,
storage, the dashboard and a fleet of simulated devices.

ClickHouse: --clickhouse ADDR if given; else a clickhouse-server (or
clickhouse) found on PATH, started and stopped by the demo with its data under
--data-dir; else the demo runs without storage and says so.

With --presenter-token the presenter API is on, on the dashboard's address:
POST /api/scenario/<name> runs a failure scenario (telemetry scenario
--help lists them) and GET /api/scenario shows the event log and the
ledgers, both with the header Authorization: Bearer <token>. The dashboard
then shows a presenter panel: type the token once, or open the page as
http://127.0.0.1:8080/#token=<token>; each scenario is marked on the charts
and ends with its ledger on screen.

Ctrl-C stops everything cleanly.`

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", demoSynopsis, stderr)
	var f pipeline.DemoConfig
	f.RegisterFlags(fs)
	logLevel := cli.LogLevelFlag(fs, "warn")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	if err := f.SetFlagDefaults(); err != nil {
		return err
	}
	d, err := pipeline.NewDemo(f, stdout, log)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return d.Run(ctx)
}
