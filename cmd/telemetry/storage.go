package main

import (
	"io"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/storage"
)

func runStorage(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("storage", "Consume READINGS from one region with a durable consumer and write them to\nClickHouse in batches, acknowledging only after the insert succeeded. Applies\nthe schema migrations at start. Serves /api/status, /api/ledger, /api/history,\n/metrics and /healthz.", stderr)
	var cfg storage.Config
	cfg.RegisterFlags(fs)
	logLevel := cli.LogLevelFlag(fs, "info")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	w, err := storage.New(cfg, log)
	if err != nil {
		return err
	}
	defer w.Close()
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return w.Run(ctx)
}
