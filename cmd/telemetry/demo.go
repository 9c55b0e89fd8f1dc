package main

import (
	"io"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
)

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", pipeline.DemoUsage, stderr)
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
