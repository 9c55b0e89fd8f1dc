// Command soak samples a running demo over time, beside a long run or a
// load test: the RSS and CPU of the demo and ClickHouse, the demo's
// goroutines and heap, the size of each data dir, ClickHouse's parts and
// the dashboard page's JS heap, into a CSV, then prints a summary with the
// trend and levelling tests of a soak run. See package bench/soak.
//
//	go run ./cmd/soak --duration 1h --out soak.csv
//	go run ./cmd/soak --summarize soak.csv
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/telemetry-demo/telemetry/bench/soak"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err) // the package's errors start with "soak:"
		os.Exit(1)
	}
}

func run() error {
	var cfg soak.Config
	var summarize string
	cfg.RegisterFlags(flag.CommandLine, &summarize)
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if summarize != "" {
		return soak.SummarizeFile(summarize, cfg.Windows, os.Stdout)
	}
	cfg.Summary = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := soak.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Run(ctx); err != nil {
		return err
	}
	return s.Close()
}

const usage = `usage: soak [flags]

Sample a running demo every --interval for --duration: the RSS and CPU of its
processes (Linux /proc), its goroutines and heap, the size of its data dirs,
ClickHouse's parts (--clickhouse) and the dashboard page's JS heap and DOM
nodes (headless Chromium), into the CSV --out, flushed at every sample. At the
end, or on Ctrl-C, print a summary; --summarize prints it again from a CSV.

`
