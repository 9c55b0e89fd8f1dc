package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/pipeline"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// startDemo runs the demo on free ports until the test ends and returns its
// console.
func startDemo(t *testing.T, clickhouse string) *testharness.SyncBuffer {
	t.Helper()
	return startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		ClickHouse: clickhouse, DataDir: t.TempDir(), Devices: 9, Rate: 90, Seed: 1,
	})
}

// startDemoWith runs the demo with f in the default regions until the
// test ends, checking that it stops cleanly then, and returns its console,
// which it logs if the test failed.
func startDemoWith(t *testing.T, f pipeline.DemoConfig) *testharness.SyncBuffer {
	t.Helper()
	out, stop := launchDemo(t, f)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("demo console:\n%s", out)
		}
	})
	return out
}

// launchDemo starts the demo with f in the default regions and returns
// its console and a stop function, Ctrl-C as a test sends it: it cancels
// the demo, waits up to 60 s for it to return, fails the test if it
// returned an error, and says how long the stop took. The test's end
// stops it too.
func launchDemo(t *testing.T, f pipeline.DemoConfig) (*testharness.SyncBuffer, func() time.Duration) {
	t.Helper()
	out := &testharness.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if f.Regions == nil {
		f.Regions = stream.DefaultRegions
	}
	d, err := pipeline.NewDemo(f, out, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("demo: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("the demo did not stop within 60 s of Ctrl-C")
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return out, stop
}

// consoleValue waits for a console line matching re and returns its group.
func consoleValue(t *testing.T, out *testharness.SyncBuffer, re *regexp.Regexp) string {
	t.Helper()
	var v string
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("console has no line matching %s:\n%s", re, out)
		}
		v = m[1]
		return nil
	})
	return v
}

func snapshot(url string) (dashboard.Snapshot, error) {
	var s dashboard.Snapshot
	resp, err := http.Get(url + "/api/snapshot")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// waitAllRegionsMoving waits until the dashboard shows readings arriving in
// every region.
func waitAllRegionsMoving(t *testing.T, url string) dashboard.Snapshot {
	t.Helper()
	var s dashboard.Snapshot
	testharness.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var err error
		if s, err = snapshot(url); err != nil {
			return err
		}
		if len(s.Regions) != 3 {
			return fmt.Errorf("snapshot has %d regions", len(s.Regions))
		}
		for _, r := range s.Regions {
			if r.Rate <= 0 || r.Total == 0 {
				return fmt.Errorf("%s: rate %v, total %d", r.Region, r.Rate, r.Total)
			}
		}
		return nil
	})
	return s
}

var dashboardLine = regexp.MustCompile(`dashboard\s+(http://\S+)`)

func TestDemoWithoutStorageSaysSoAndStillMoves(t *testing.T) {
	out := startDemo(t, "none")
	url := consoleValue(t, out, dashboardLine)
	if !strings.Contains(out.String(), "STORAGE IS OFF") {
		t.Errorf("console does not say storage is off:\n%s", out)
	}
	if !strings.Contains(out.String(), "presenter API      off: no --presenter-token") {
		t.Errorf("console does not say the presenter API is off:\n%s", out)
	}
	// The streams' disk budget, and how long it buffers at the demo's rate.
	if !regexp.MustCompile(`READINGS keeps up to 1\.0 GiB per region .* at \d+ readings/s it holds [\d.]+ h`).MatchString(out.String()) {
		t.Errorf("console does not state the streams' budget:\n%s", out)
	}
	s := waitAllRegionsMoving(t, url)
	if s.Storage.State != "off" || !strings.Contains(s.Storage.Reason, "--clickhouse none") {
		t.Errorf("dashboard storage state %+v, want off with the reason", s.Storage)
	}
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte("storage-state")) {
		t.Errorf("GET / = %d, page without the storage state element", resp.StatusCode)
	}
}

func TestDemoStoresReadingsInClickHouseFromPath(t *testing.T) {
	testharness.RequireClickHouse(t)
	out := startDemo(t, "")
	url := consoleValue(t, out, dashboardLine)
	waitAllRegionsMoving(t, url)
	addr := consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	count := func() (uint64, error) {
		var n uint64
		err := conn.QueryRow(context.Background(), `SELECT count() FROM telemetry.readings`).Scan(&n)
		return n, err
	}
	var first uint64
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		n, err := count()
		if err != nil || n == 0 {
			return fmt.Errorf("readings in ClickHouse: %d, %v", n, err)
		}
		first = n
		return nil
	})
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		n, err := count()
		if err != nil || n <= first {
			return fmt.Errorf("readings in ClickHouse stay at %d (%v)", n, err)
		}
		return nil
	})
	// The dashboard asks storage for its state every 2 s: it may not have
	// heard of the inserts yet.
	testharness.CheckFor(t, 10*time.Second, 250*time.Millisecond, func() error {
		s, err := snapshot(url)
		if err != nil {
			return err
		}
		if s.Storage.State != "ok" {
			return fmt.Errorf("dashboard storage state %+v, want ok", s.Storage)
		}
		return nil
	})

	// The page's history, through the dashboard's proxy, from the real
	// storage service: every field storage serves reaches the page.
	testharness.CheckFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		resp, err := http.Get(url + "/api/history?metric=temperature_c&minutes=5")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("history: %s %s", resp.Status, b)
		}
		dec := json.NewDecoder(resp.Body)
		dec.DisallowUnknownFields()
		var h storage.History
		if err := dec.Decode(&h); err != nil {
			return fmt.Errorf("history as storage.History: %w", err)
		}
		if h.Metric != "temperature_c" || h.Minutes != 5 || h.From.IsZero() || !h.To.After(h.From) || len(h.Series) == 0 {
			return fmt.Errorf("history %+v: want temperature_c over 5 minutes, with series", h)
		}
		for _, se := range h.Series {
			for _, p := range se.Points {
				if p.Count == 0 || p.Min > p.P50 || p.P50 > p.P99 || p.P99 > p.Max {
					return fmt.Errorf("%s %s minute %v: %+v, want counted readings with min <= p50 <= p99 <= max", se.Region, se.DeviceType, p.Minute, p)
				}
			}
		}
		return nil
	})
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{c.name, "--help"}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if !strings.Contains(errb.String()+out.String(), "TELEMETRY_") {
				t.Errorf("help does not name the environment variables:\n%s", errb.String())
			}
		})
	}
}

func TestUnknownCommandAndBadFlagFail(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"nope"}, &out, &errb); code == 0 {
		t.Error("unknown command exited 0")
	}
	errb.Reset()
	if code := run([]string{"ingest", "--max-inflight", "lots"}, &out, &errb); code == 0 {
		t.Error("bad flag value exited 0")
	}
}

// TestSecondDemoOnTheSameDataDirRefuses: a second demo on a running one's
// data dir exits with an error naming the first within a second, before
// touching anything: the first keeps running, its stream whole.
func TestSecondDemoOnTheSameDataDirRefuses(t *testing.T) {
	dir := t.TempDir()
	f := pipeline.DemoConfig{MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		ClickHouse: "none", DataDir: dir, Devices: 3, Rate: 30, Seed: 1}
	out := startDemoWith(t, f)
	url := consoleValue(t, out, dashboardLine)
	before := waitAllRegionsMoving(t, url)

	f.Regions = stream.DefaultRegions
	second, err := pipeline.NewDemo(f, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = second.Run(context.Background())
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "data dir in use") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second demo: %v; want refused, naming the running demo", err)
	}
	if took > time.Second {
		t.Errorf("second demo took %v to refuse, want under 1 s", took)
	}
	// The first goes on, every region still moving, its counts still
	// growing from where they were.
	testharness.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		after := waitAllRegionsMoving(t, url)
		for i, r := range after.Regions {
			if r.Total <= before.Regions[i].Total {
				return fmt.Errorf("%s: %d readings seen, %d before the second demo", r.Region, r.Total, before.Regions[i].Total)
			}
		}
		return nil
	})
}

// TestFreshDemoStartsFromZero: a demo started again on its data dir keeps
// its dead letters (the page's rejected counts go on from where they
// were); with --fresh it starts from nothing and every region reads 0.
func TestFreshDemoStartsFromZero(t *testing.T) {
	dir := t.TempDir()
	f := pipeline.DemoConfig{MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		ClickHouse: "none", DataDir: dir, Devices: 3, Rate: 30, Seed: 1}
	natsLine := regexp.MustCompile(`NATS region us-east\s+nats://\S+@(\S+)`)
	// run starts a demo with f, waits until the page shows every region's
	// dead letters, and returns its rejected counts after calling during.
	run := func(f pipeline.DemoConfig, during func(out *testharness.SyncBuffer)) map[string]uint64 {
		t.Helper()
		out, stop := launchDemo(t, f)
		defer stop()
		url := consoleValue(t, out, dashboardLine)
		waitAllRegionsMoving(t, url)
		if during != nil {
			during(out)
		}
		rejected := map[string]uint64{}
		testharness.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			s, err := snapshot(url)
			if err != nil {
				return err
			}
			for _, r := range s.Regions {
				if r.DeadLetters != "ok" {
					return fmt.Errorf("%s dead letters: %s", r.Region, r.DeadLetters)
				}
				rejected[r.Region] = r.RejectedTotal
			}
			if during != nil && rejected["us-east"] == 0 {
				return errors.New("the dead letter is not counted yet")
			}
			return nil
		})
		return rejected
	}

	first := run(f, func(out *testharness.SyncBuffer) {
		// A hostile payload's dead letter, as ingest stores it.
		addr := consoleValue(t, out, natsLine)
		nc, err := nats.Connect("nats://" + stream.DemoUser + ":" + stream.DemoPassword + "@" + addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: protocol.DeadLetterSubject("us-east", "bad_json"), Data: []byte("{"), Header: nats.Header{}}
		msg.Header.Set(protocol.HeaderReason, "bad_json")
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	})
	if again := run(f, nil); again["us-east"] < first["us-east"] {
		t.Errorf("restarted on its data dir, us-east's rejected count went from %d to %d", first["us-east"], again["us-east"])
	}
	f.Fresh = true
	for region, n := range run(f, nil) {
		if n != 0 {
			t.Errorf("--fresh: %s starts with %d rejected, want 0", region, n)
		}
	}
}
