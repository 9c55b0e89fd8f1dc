package soak

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// RegisterFlags binds c to the flags of the soak command; summarize
// receives --summarize (only print the summary of an earlier run's CSV).
func (c *Config) RegisterFlags(fs *flag.FlagSet, summarize *string) {
	fs.DurationVar(&c.Interval, "interval", DefaultInterval, "time between samples")
	fs.DurationVar(&c.Duration, "duration", time.Hour, "how long to sample; 0: until Ctrl-C")
	fs.Var(procFlag{&c.Procs}, "proc", "NAME=REGEX: processes whose command line (arguments joined with spaces) matches, summed (repeatable; default: demo and clickhouse, see soak.DefaultProcs)")
	fs.StringVar(&c.MetricsURL, "metrics", DemoMetricsURL, "Prometheus /metrics of the demo, for go_goroutines and go_memstats_heap_inuse_bytes; empty: none")
	fs.Var(dirFlag{&c.Dirs}, "dir", "NAME=PATH: a directory whose size to sample (repeatable; default: --data-dir's nats/* as nats-<region>, as they are when soak starts, and its clickhouse)")
	fs.StringVar(&c.DataDir, "data-dir", DemoDataDir, "the demo's --data-dir, for the default --dir")
	fs.StringVar(&c.ClickHouse, "clickhouse", "", "ClickHouse native address, to read system.parts of the telemetry database; empty: none")
	fs.StringVar(&c.ClickHouseUser, "clickhouse-user", "default", "ClickHouse user")
	fs.StringVar(&c.ClickHousePassword, "clickhouse-password", "", "ClickHouse password")
	fs.StringVar(&c.PageURL, "page", DemoPageURL, "page kept open in headless Chromium, whose JS heap and DOM nodes to sample; empty: none")
	fs.StringVar(&c.Out, "out", DefaultOut, "the CSV of the samples (overwritten)")
	fs.DurationVar(&c.Windows.TrendFrom, "trend-from", 15*time.Minute, "the trend test compares the peak from here on, for --trend-window, ...")
	fs.DurationVar(&c.Windows.TrendLength, "trend-window", 15*time.Minute, "... with the peak of the run's last --trend-window")
	fs.StringVar(summarize, "summarize", "", "only print the summary of this CSV of an earlier run")
}

// procFlag is the repeatable --proc NAME=REGEX.
type procFlag struct{ p *[]Proc }

func (f procFlag) String() string {
	if f.p == nil {
		return ""
	}
	return fmt.Sprint(*f.p)
}

func (f procFlag) Set(s string) error {
	name, pattern, err := namedValue(s)
	if err == nil {
		*f.p = append(*f.p, Proc{Name: name, Pattern: pattern})
	}
	return err
}

// dirFlag is the repeatable --dir NAME=PATH.
type dirFlag struct{ d *[]Dir }

func (f dirFlag) String() string {
	if f.d == nil {
		return ""
	}
	return fmt.Sprint(*f.d)
}

func (f dirFlag) Set(s string) error {
	name, path, err := namedValue(s)
	if err == nil {
		*f.d = append(*f.d, Dir{Name: name, Path: path})
	}
	return err
}

func namedValue(s string) (name, value string, err error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" || value == "" {
		return "", "", errors.New("want NAME=VALUE")
	}
	return name, value, nil
}
