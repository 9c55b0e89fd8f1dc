package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/scenario"
)

func runScenario(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("scenario", scenario.Usage(), stderr)
	demoURL := fs.String("demo-url", "http://127.0.0.1:8080", "the demo's dashboard address")
	var token string
	cli.SecretVar(fs, &token, "presenter-token", "", "the demo's --presenter-token (or TELEMETRY_PRESENTER_TOKEN, as for the demo)")
	window := fs.Duration("duration", 0, "how long the fault lasts (0: the demo's --scenario-duration)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up waiting for the ledger after this long")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	// The scenario's name and argument may come before or among the flags.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := cli.Parse(fs, nil); err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	req, err := scenario.ParseArgs(pos[0], pos[1:])
	if err != nil {
		return fmt.Errorf("%w (see telemetry scenario --help)", err)
	}
	req.Window = *window
	if token == "" {
		return errors.New("no token: give --presenter-token, the one the demo was started with, or set TELEMETRY_PRESENTER_TOKEN")
	}

	ctx, stop := cli.SignalContext(slog.New(slog.DiscardHandler))
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := scenario.Client{URL: *demoURL, Token: token}
	return c.Report(ctx, req, *asJSON, stdout, stderr)
}
