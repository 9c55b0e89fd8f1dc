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
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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
	var procs, dirs pairs
	flag.DurationVar(&cfg.Interval, "interval", soak.DefaultInterval, "time between samples")
	flag.DurationVar(&cfg.Duration, "duration", time.Hour, "how long to sample; 0: until Ctrl-C")
	flag.Var(&procs, "proc", "NAME=REGEX: processes whose command line (arguments joined with spaces) matches, summed (repeatable; default: demo and clickhouse, see soak.DefaultProcs)")
	flag.StringVar(&cfg.MetricsURL, "metrics", soak.DemoMetricsURL, "Prometheus /metrics of the demo, for go_goroutines and go_memstats_heap_inuse_bytes; empty: none")
	flag.Var(&dirs, "dir", "NAME=PATH: a directory whose size to sample (repeatable; default: --data-dir's nats/* as nats-<region>, as they are when soak starts, and its clickhouse)")
	flag.StringVar(&cfg.DataDir, "data-dir", soak.DemoDataDir, "the demo's --data-dir, for the default --dir")
	flag.StringVar(&cfg.ClickHouse, "clickhouse", "", "ClickHouse native address, to read system.parts of the telemetry database; empty: none")
	flag.StringVar(&cfg.ClickHouseUser, "clickhouse-user", "default", "ClickHouse user")
	flag.StringVar(&cfg.ClickHousePassword, "clickhouse-password", "", "ClickHouse password")
	flag.StringVar(&cfg.PageURL, "page", soak.DemoPageURL, "page kept open in headless Chromium, whose JS heap and DOM nodes to sample; empty: none")
	flag.StringVar(&cfg.Out, "out", soak.DefaultOut, "the CSV of the samples (overwritten)")
	flag.DurationVar(&cfg.Windows.TrendFrom, "trend-from", 15*time.Minute, "the trend test compares the peak from here on, for --trend-window, ...")
	flag.DurationVar(&cfg.Windows.TrendLength, "trend-window", 15*time.Minute, "... with the peak of the run's last --trend-window")
	summarize := flag.String("summarize", "", "only print the summary of this CSV of an earlier run")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *summarize != "" {
		return soak.SummarizeFile(*summarize, cfg.Windows, os.Stdout)
	}
	for _, p := range procs {
		cfg.Procs = append(cfg.Procs, soak.Proc{Name: p[0], Pattern: p[1]})
	}
	for _, d := range dirs {
		cfg.Dirs = append(cfg.Dirs, soak.Dir{Name: d[0], Path: d[1]})
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

// pairs is a repeatable NAME=VALUE flag.
type pairs [][2]string

func (p *pairs) String() string { return fmt.Sprint(*p) }

func (p *pairs) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" || value == "" {
		return errors.New("want NAME=VALUE")
	}
	*p = append(*p, [2]string{name, value})
	return nil
}
