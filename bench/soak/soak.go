package soak

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/storage"
)

// The local demo's endpoints (telemetry demo's defaults). Its Go runtime
// metrics are served by storage's listener, not the dashboard's: the
// demo is one process, so they are the demo's.
const (
	DemoMetricsURL = "http://" + storage.DefaultListen + "/metrics"
	DemoPageURL    = "http://" + dashboard.DefaultListen + "/"
	DemoDataDir    = "demo-data"
)

// Defaults for zero fields of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultOut      = "soak.csv"
)

// Proc names the processes whose command line (its arguments joined with
// spaces) Pattern matches.
type Proc struct{ Name, Pattern string }

// DefaultProcs are the demo and its ClickHouse. The patterns are anchored
// on the program's name so that neither `go run ./cmd/telemetry demo`'s go
// command nor a process with a --clickhouse flag (the demo, this sampler)
// counts as one of them.
var DefaultProcs = []Proc{
	{"demo", `^(\S*/)?telemetry demo( |$)`},
	{"clickhouse", `^(\S*/)?clickhouse(-server| server)( |$)`},
}

// Dir names a directory whose size is sampled.
type Dir struct{ Name, Path string }

// DefaultDirs are the demo's data directories under dataDir, as they are
// now: each region's NATS store (dataDir/nats/*, as nats-<region>, but for
// nats/conf, where stream.StartEmbedded writes the servers' configuration)
// and dataDir/clickhouse.
func DefaultDirs(dataDir string) []Dir {
	matches, _ := filepath.Glob(filepath.Join(dataDir, "nats", "*")) // the pattern is valid
	var dirs []Dir
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() && fi.Name() != "conf" {
			dirs = append(dirs, Dir{"nats-" + filepath.Base(m), m})
		}
	}
	return append(dirs, Dir{ClickHouseDir, filepath.Join(dataDir, "clickhouse")})
}

// ClickHouseDir is the name of the disk series that the summary compares
// with ClickHouse's live data.
const ClickHouseDir = "clickhouse"

// Config configures a run.
type Config struct {
	Interval time.Duration // between samples; default DefaultInterval
	Duration time.Duration // of the run; 0: until the context is done

	Procs []Proc // default DefaultProcs
	// Dirs default to DefaultDirs(DataDir), resolved by New.
	Dirs    []Dir
	DataDir string // default DemoDataDir

	MetricsURL string // a Prometheus /metrics; empty: not read
	PageURL    string // opened in headless Chromium; empty: no page

	ClickHouse         string // native address; empty: system.parts not read
	ClickHouseUser     string // default "default"
	ClickHousePassword string

	Out     string    // the CSV file; default DefaultOut
	Windows Windows   // of the summary; zero fields take their defaults
	Summary io.Writer // where the summary is printed; nil: not printed
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Procs == nil {
		c.Procs = DefaultProcs
	}
	if c.DataDir == "" {
		c.DataDir = DemoDataDir
	}
	if c.ClickHouseUser == "" {
		c.ClickHouseUser = "default"
	}
	if c.Out == "" {
		c.Out = DefaultOut
	}
	c.Windows = c.Windows.withDefaults()
	return c
}

// Validate checks the configuration; it does no I/O.
func (c Config) Validate() error {
	if c.Duration < 0 {
		return fmt.Errorf("soak: negative duration %s", c.Duration)
	}
	for _, p := range c.Procs {
		if p.Name == "" {
			return fmt.Errorf("soak: process pattern %q without a name", p.Pattern)
		}
		if _, err := regexp.Compile(p.Pattern); err != nil {
			return fmt.Errorf("soak: process %s: %w", p.Name, err)
		}
	}
	for _, d := range c.Dirs {
		if d.Name == "" || d.Path == "" {
			return fmt.Errorf("soak: directory %q=%q: want NAME=PATH", d.Name, d.Path)
		}
	}
	if c.Windows.TrendFrom < 0 || c.Windows.TrendLength < 0 {
		return fmt.Errorf("soak: negative trend window (from %s, length %s)", c.Windows.TrendFrom, c.Windows.TrendLength)
	}
	return nil
}

// source is one thing sampled: it names its series, and returns one value
// for each, NaN for a value it could not take, with the reason.
type source interface {
	names() []string
	sample(ctx context.Context) ([]float64, error)
	close()
}

// Sampler is a run.
type Sampler struct {
	cfg     Config
	log     *slog.Logger
	sources []source
	out     *os.File

	closeOnce sync.Once
}

// New opens what a run samples: the output file, ClickHouse's connection
// pool (which connects on first use) and, with a PageURL, the browser. A
// missing Chromium is an error; endpoints that do not answer yet are not.
func New(cfg Config, log *slog.Logger) (*Sampler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Dirs == nil {
		cfg.Dirs = DefaultDirs(cfg.DataDir)
	}
	s := &Sampler{cfg: cfg, log: log}
	for _, p := range cfg.Procs {
		s.sources = append(s.sources, &procSource{name: p.Name, re: regexp.MustCompile(p.Pattern), self: os.Getpid(), prev: map[int]uint64{}})
	}
	if cfg.MetricsURL != "" {
		s.sources = append(s.sources, newMetricsSource(cfg.MetricsURL))
	}
	for _, d := range cfg.Dirs {
		s.sources = append(s.sources, dirSource(d))
	}
	if cfg.ClickHouse != "" {
		ch, err := newPartsSource(cfg.ClickHouse, cfg.ClickHouseUser, cfg.ClickHousePassword)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.sources = append(s.sources, ch)
	}
	if cfg.PageURL != "" {
		p, err := openBrowser(cfg.PageURL)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.sources = append(s.sources, p)
	}
	out, err := os.Create(cfg.Out)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("soak: %w", err)
	}
	s.out = out
	return s, nil
}

// Run samples every Interval until Duration has passed or ctx is done
// (which is how a run without Duration ends: not an error), then prints
// the summary of the CSV it wrote.
func (s *Sampler) Run(ctx context.Context) error {
	header := []string{"elapsed_s"}
	for _, src := range s.sources {
		header = append(header, src.names()...)
	}
	w := csv.NewWriter(s.out)
	if err := writeRow(w, header); err != nil {
		return fmt.Errorf("soak: writing %s: %w", s.cfg.Out, err)
	}
	s.log.Info("soak: sampling", "every", s.cfg.Interval, "for", s.cfg.Duration, "series", header[1:], "out", s.cfg.Out)

	lastErr := make([]string, len(s.sources))
	start := time.Now()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for n := time.Duration(0); ; n++ {
		elapsed := time.Since(start)
		row := []string{formatValue(elapsed.Seconds())}
		for i, src := range s.sources {
			row = append(row, s.sampleSource(ctx, src, &lastErr[i])...)
		}
		if ctx.Err() != nil {
			break // cut short by the end: not a sample
		}
		if err := writeRow(w, row); err != nil {
			return fmt.Errorf("soak: writing %s: %w", s.cfg.Out, err)
		}
		if s.cfg.Duration > 0 && n*s.cfg.Interval >= s.cfg.Duration {
			break // the sample due at Duration was the last
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	if s.cfg.Summary == nil {
		return nil
	}
	return SummarizeFile(s.cfg.Out, s.cfg.Windows, s.cfg.Summary)
}

// sampleSource takes one sample of src, bounded by the interval, and logs
// when its samples go missing and when they come back.
func (s *Sampler) sampleSource(ctx context.Context, src source, lastErr *string) []string {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
	defer cancel()
	vals, err := src.sample(sctx)
	switch {
	case ctx.Err() != nil:
	case err != nil && err.Error() != *lastErr:
		s.log.Warn("soak: sample missing", "series", src.names(), "err", err)
		*lastErr = err.Error()
	case err == nil && *lastErr != "":
		s.log.Info("soak: sample back", "series", src.names())
		*lastErr = ""
	}
	cells := make([]string, len(src.names()))
	for i := range cells {
		if i < len(vals) && !math.IsNaN(vals[i]) {
			cells[i] = formatValue(vals[i])
		}
	}
	return cells
}

// Close stops the browser and closes the connections and the CSV file. It
// is idempotent.
func (s *Sampler) Close() error {
	var err error
	s.closeOnce.Do(func() {
		for _, src := range s.sources {
			src.close()
		}
		if s.out != nil {
			err = s.out.Close()
		}
	})
	return err
}

// writeRow writes a row and flushes it, so that the file holds every
// sample taken even if the run is killed.
func writeRow(w *csv.Writer, row []string) error {
	w.Write(row) // its error is w.Error's
	w.Flush()
	return w.Error()
}

// formatValue writes v with at most three decimals.
func formatValue(v float64) string {
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}
