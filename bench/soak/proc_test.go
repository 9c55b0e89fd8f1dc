package soak

import (
	"context"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"
	"time"
)

// sink keeps the CPU burnt by TestReadOwnProcess from being optimised away.
var sink int

func TestReadOwnProcess(t *testing.T) {
	rss, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Errorf("RSS of the test process = %.0f bytes, want at least 1 MiB", rss)
	}
	t0, err := readCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the ticks move: they must, within a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		t1, err := readCPUTicks(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if t1 > t0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU ticks stayed at %d after 10 s of work", t0)
		}
		for range 1_000_000 {
			sink = sink*31 + 7
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       uint64
		ok         bool
	}{
		{"plain", "42 (telemetry) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 12 0 100 0 0", 280, true},
		{"name with spaces and parens", "42 (a b) (c)) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 10, true},
		{"truncated", "42 (x) S 1 2 3", 0, false},
		{"no name", "42 x S 1", 0, false},
		{"not numbers", "42 (x) S 1 42 42 0 -1 0 0 0 0 0 u s 0 0", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tc.stat))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("parseStatTicks(%q) = %d, %v; want %d, ok %v", tc.stat, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestProcSource(t *testing.T) {
	// A child with a command line no other process has.
	cmd := exec.Command("sleep", "3600.4217")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	re := regexp.MustCompile(`^(\S*/)?sleep 3600\.4217$`)
	pids, err := matchingPIDs(re, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Fatalf("matching processes = %v, want the child %d", pids, cmd.Process.Pid)
	}
	if pids, _ := matchingPIDs(re, cmd.Process.Pid); len(pids) != 0 {
		t.Errorf("the excluded process was matched: %v", pids)
	}

	p := &procSource{name: "sleep", re: re, prev: map[int]uint64{}}
	first, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !(first[0] > 0) || !math.IsNaN(first[1]) {
		t.Errorf("first sample = %v, want an RSS and no CPU yet", first)
	}
	second, err := p.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !(second[0] > 0) || !(second[1] >= 0) {
		t.Errorf("second sample = %v, want an RSS and a CPU", second)
	}

	none := &procSource{name: "none", re: regexp.MustCompile(`^no such process \d{40}$`), prev: map[int]uint64{}}
	got, err := none.sample(context.Background())
	if err == nil || !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("no process: %v, %v; want missing values and a reason", got, err)
	}
}

func TestDefaultProcs(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    string // the name it matches, "" none
	}{
		{"/tmp/go-build1/b001/exe/telemetry demo", "demo"},
		{"./telemetry demo --rate 150", "demo"},
		{"go run ./cmd/telemetry demo", ""},
		{"telemetry bench --rate 5000", ""},
		{"/usr/sbin/clickhouse-server --config-file=demo-data/clickhouse/config.xml", "clickhouse"},
		{"/usr/bin/clickhouse server --config-file=x.xml", "clickhouse"},
		{"/tmp/go-build2/b001/exe/soak --clickhouse 127.0.0.1:9000", ""},
		{"/tmp/go-build1/b001/exe/telemetry demo --clickhouse 127.0.0.1:9000", "demo"},
	} {
		var got []string
		for _, p := range DefaultProcs {
			if regexp.MustCompile(p.Pattern).MatchString(tc.cmdline) {
				got = append(got, p.Name)
			}
		}
		if want := []string{tc.want}; tc.want == "" && len(got) != 0 || tc.want != "" && !slices.Equal(got, want) {
			t.Errorf("%q matches %v, want %q", tc.cmdline, got, tc.want)
		}
	}
}
