package soak

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// run writes the CSV of a run of the given length sampled every 10 s, as
// Run does, with one column per series: f(minutes since the start), NaN
// for a missing sample.
func run(t *testing.T, length time.Duration, series map[string]func(min float64) float64, order ...string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	if err := writeRow(w, append([]string{"elapsed_s"}, order...)); err != nil {
		t.Fatal(err)
	}
	for s := 0.0; s <= length.Seconds(); s += 10 {
		row := []string{formatValue(s)}
		for _, name := range order {
			cell := ""
			if v := series[name](s / 60); !math.IsNaN(v) {
				cell = formatValue(v)
			}
			row = append(row, cell)
		}
		if err := writeRow(w, row); err != nil {
			t.Fatal(err)
		}
	}
	return &buf
}

func TestSummarize(t *testing.T) {
	series := map[string]func(float64) float64{
		// RSS that grows 1 MiB a minute: 130 at minute 30, 160 at 60.
		"demo_rss_mib": func(m float64) float64 { return 100 + m },
		// Flat but for noise and one early spike, as a healthy process.
		"clickhouse_rss_mib": func(m float64) float64 {
			if m == 20 {
				return 520
			}
			return 500 + 5*math.Sin(m)
		},
		// Missing for the first minute, then flat.
		"go_goroutines": func(m float64) float64 {
			if m < 1 {
				return math.NaN()
			}
			return 40
		},
		// Grows steadily: never levels off.
		"disk_nats-us-east_mib": func(m float64) float64 { return 10 * m },
		// Grows for 30 minutes, then stays.
		"disk_clickhouse_mib": func(m float64) float64 { return 100 + 10*min(m, 30) },
		"ch_active_mib":       func(m float64) float64 { return 5 * min(m, 30) },
	}
	order := []string{"demo_rss_mib", "clickhouse_rss_mib", "go_goroutines", "disk_nats-us-east_mib", "disk_clickhouse_mib", "ch_active_mib"}
	s, err := Summarize(run(t, time.Hour, series, order...), Windows{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Lasted != time.Hour || len(s.Lines) != len(order) {
		t.Fatalf("summary of %s, %d lines; want 1h, %d", s.Lasted, len(s.Lines), len(order))
	}
	line := map[string]Line{}
	for _, l := range s.Lines {
		line[l.Name] = l
	}

	rss := line["demo_rss_mib"]
	if rss.First != 100 || rss.Min != 100 || rss.Max != 160 || rss.Last != 160 || rss.Samples != 361 || rss.Missing != 0 {
		t.Errorf("demo_rss_mib = %+v", rss)
	}
	if c := rss.Trend; c == nil || math.Abs(c.Ratio-160.0/130) > 0.01 || c.OK {
		t.Errorf("rising RSS: trend %+v, want x1.23, not OK", c)
	}
	if c := line["clickhouse_rss_mib"].Trend; c == nil || c.Before != 520 || c.Ratio > 1 || !c.OK {
		t.Errorf("flat RSS with an early spike: trend %+v, want under x1, OK", c)
	}
	g := line["go_goroutines"]
	if g.Missing != 6 || g.First != 40 || g.Trend == nil || g.Trend.Ratio != 1 || !g.Trend.OK {
		t.Errorf("go_goroutines = %+v, trend %+v; want 6 missing, a flat trend", g, g.Trend)
	}
	if l := line["demo_rss_mib"]; l.Level != nil {
		t.Errorf("a process has a disk level: %+v", l.Level)
	}
	if c := line["disk_nats-us-east_mib"].Level; c == nil || c.Before >= c.After || c.OK {
		t.Errorf("growing disk: level %+v, want not levelled", c)
	}
	if c := line["disk_clickhouse_mib"].Level; c == nil || c.Ratio != 1 || !c.OK {
		t.Errorf("disk that stopped growing: level %+v, want x1", c)
	}
	// dir - 2*live is 100 at every sample.
	if math.Abs(s.Overhead-100) > 0.01 {
		t.Errorf("overhead = %v, want 100", s.Overhead)
	}

	var out strings.Builder
	if err := s.Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"demo_rss_mib", "x1.23, UPWARD TREND", "no upward trend", "STILL GROWING", "levelled off", "+ 100.00 MiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSummarizeShortRun(t *testing.T) {
	rising := map[string]func(float64) float64{"demo_rss_mib": func(m float64) float64 { return 100 + m }}
	// 44 minutes: minutes 15-30 and the last 15 would overlap.
	s, err := Summarize(run(t, 44*time.Minute, rising, "demo_rss_mib"), Windows{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Lines[0].Trend != nil {
		t.Errorf("trend of a 44-minute run: %+v, want none", s.Lines[0].Trend)
	}
	// The same run with shorter windows has a trend.
	s, err = Summarize(run(t, 44*time.Minute, rising, "demo_rss_mib"), Windows{TrendFrom: 5 * time.Minute, TrendLength: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Lines[0].Trend; c == nil || math.Abs(c.Before-114.833) > 0.001 || c.After != 144 {
		t.Errorf("trend with 5m+10m windows: %+v, want peaks 114.8 and 144", c)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	rows := [][]string{
		{"elapsed_s", "a_mib", "b"},
		{"0", formatValue(1.23456), ""},
		{formatValue(10.0004), formatValue(2), formatValue(1e9)},
	}
	for _, r := range rows {
		if err := writeRow(w, r); err != nil {
			t.Fatal(err)
		}
	}
	series, err := ReadCSV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 2 || series[0].Name != "a_mib" || series[1].Name != "b" {
		t.Fatalf("series = %+v", series)
	}
	want := [][]float64{{1.235, 2}, {math.NaN(), 1e9}}
	for j, s := range series {
		if len(s.Values) != 2 || s.Elapsed[0] != 0 || s.Elapsed[1] != 10 {
			t.Fatalf("%s: %+v", s.Name, s)
		}
		for i, v := range s.Values {
			if v != want[j][i] && !(math.IsNaN(v) && math.IsNaN(want[j][i])) {
				t.Errorf("%s[%d] = %v, want %v", s.Name, i, v, want[j][i])
			}
		}
	}

	for _, bad := range []string{"", "time,a\n0,1\n", "elapsed_s,a\nx,1\n", "elapsed_s,a\n0,y\n", "elapsed_s,a\n0\n"} {
		if _, err := ReadCSV(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadCSV(%q): no error", bad)
		}
	}
}

// TestRun samples a directory, a /metrics and a process that does not
// exist, and checks the file and the summary it leaves.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "soak.csv")
	var summary bytes.Buffer
	s, err := New(Config{
		// Each sample may take an interval (its timeout): 100 ms leaves room
		// for a machine loaded by the rest of the suite (at 5 ms the
		// /metrics answer came too late twice).
		Interval: 100 * time.Millisecond, Duration: 500 * time.Millisecond,
		Procs:      []Proc{{"ghost", `^no such process \d{40}$`}},
		Dirs:       []Dir{{"data", dir}},
		MetricsURL: serve(t, "# TYPE go_goroutines gauge\ngo_goroutines 7\n# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes 1048576\n"),
		Out:        out, Summary: &summary,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := "elapsed_s,ghost_rss_mib,ghost_cpu_cores,go_goroutines,go_heap_inuse_mib,disk_data_mib"
	if strings.Join(rows[0], ",") != header {
		t.Errorf("header = %v, want %s", rows[0], header)
	}
	if len(rows) != 1+6 { // samples due at 0, 100, ..., 500 ms
		t.Errorf("%d samples, want 6", len(rows)-1)
	}
	for _, r := range rows[1:] {
		if got := strings.Join(r[1:], ","); got != ",,7,1,1" {
			t.Errorf("sample %v, want ,,7,1,1 after elapsed_s", r)
		}
	}
	if !strings.Contains(summary.String(), "disk_data_mib") || !strings.Contains(summary.String(), "ghost_rss_mib") {
		t.Errorf("summary:\n%s", summary.String())
	}
}

// FuzzSummarize feeds Summarize any file: it must return an error or a
// summary, never panic.
func FuzzSummarize(f *testing.F) {
	f.Add("elapsed_s,a\n0,1\n10,\n")
	f.Add("elapsed_s,disk_x_mib,disk_clickhouse_mib,ch_active_mib\n0,1,2,3\n600,4,5,\n")
	f.Add("elapsed_s\n0\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Summarize(strings.NewReader(in), Windows{TrendFrom: time.Second, TrendLength: time.Second})
		if err == nil {
			s.Print(io.Discard)
		}
	})
}
