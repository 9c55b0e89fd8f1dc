package dashboard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// browser starts a headless Chromium for the test and returns a context
// whose tab it drives. A missing chromium skips the test, or fails it in CI.
func browser(t *testing.T) context.Context {
	t.Helper()
	return testharness.Browser(t, 1600, 1000)
}

// navigate opens url in the browser's tab.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
}

// text is the text of the element with id, "" if there is none.
func text(ctx context.Context, id string) (string, error) {
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	js := fmt.Sprintf(`(document.getElementById(%q) || {}).textContent || ""`, id)
	return chromedp.Run(ectx, chromedp.Evaluate[string](js))
}

// waitText polls the page until the element with id has a text ok accepts.
func waitText(t *testing.T, ctx context.Context, id string, what string, ok func(string) bool) string {
	t.Helper()
	var last string
	waitFor(t, 60*time.Second, func() error {
		s, err := text(ctx, id)
		if err != nil {
			return err
		}
		last = s
		if !ok(s) {
			return fmt.Errorf("#%s is %q, want %s", id, s, what)
		}
		return nil
	})
	return last
}

func contains(sub string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, sub) }
}

// keepPublishing publishes a reading of region every 50 ms until the test
// ends, as devices would: device th-<region>, so that readings of several
// regions sourced into one stream keep distinct ids.
func keepPublishing(t *testing.T, js jetstream.JetStream, region string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r := protocol.Reading{
				Version: protocol.Version1, Device: "th-" + region, Boot: 1, Seq: seq, TS: time.Now().UnixMilli(),
				Metrics: []protocol.Metric{{Name: "temperature_c", Value: 20 + float64(seq%10)}},
			}
			_, _ = js.PublishMsg(ctx, &nats.Msg{
				Subject: "telemetry." + region + ".thermostat.th-" + region,
				Data:    protocol.AppendEncode(nil, r),
				Header:  nats.Header{"Nats-Msg-Id": []string{r.ID()}},
			})
		}
	}()
}

var clockTime = regexp.MustCompile(`since \d\d:\d\d:\d\d`)

// TestBrowserLivePage drives the page in Chromium: it loads, its websocket
// connects, its numbers move with the readings published into NATS, and it
// says plainly what is down: storage off, a region unreachable since when,
// and its own connection to the dashboard.
func TestBrowserLivePage(t *testing.T) {
	ctx := browser(t)
	url, js, _ := startRegion(t)
	// No server serves eu-west's domain: the page must call it unreachable.
	_, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east", "eu-west"},
		PushInterval: 200 * time.Millisecond, StorageOffReason: "no ClickHouse found",
	})
	waitConsuming(t, base)
	keepPublishing(t, js, "us-east")
	navigate(t, ctx, base)

	waitText(t, ctx, "conn-state", `"live"`, func(s string) bool { return s == "live" })

	// The numbers change over time.
	total := func(s string) (int, bool) {
		n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
		return n, err == nil
	}
	first := waitText(t, ctx, "total-us-east", "a count", func(s string) bool { n, ok := total(s); return ok && n > 0 })
	n0, _ := total(first)
	waitText(t, ctx, "total-us-east", fmt.Sprintf("more than %d", n0), func(s string) bool { n, ok := total(s); return ok && n > n0 })
	waitText(t, ctx, "rate-us-east", "a rate above zero", func(s string) bool {
		v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
		return err == nil && v > 0
	})
	waitText(t, ctx, "metric-us-east-thermostat-temperature_c", "avg (p95 · min–max) of temperature_c", func(s string) bool {
		return regexp.MustCompile(`^2\d\.\d+ ?2\d\.\d+ · 2\d\.\d+–2\d\.\d+$`).MatchString(s)
	})

	// Storage off, and the history that depends on it.
	waitText(t, ctx, "storage-state", `"Storage off"`, contains("Storage off"))
	waitText(t, ctx, "storage-detail", "the reason", contains("no ClickHouse found"))
	waitText(t, ctx, "history-state", "history unavailable: storage off", contains("history unavailable: storage off"))

	// A region that cannot be reached, with since when.
	waitText(t, ctx, "reach-eu-west", "UNREACHABLE since hh:mm:ss", func(s string) bool {
		return strings.HasPrefix(s, "UNREACHABLE") && clockTime.MatchString(s)
	})
	waitText(t, ctx, "alert-region-eu-west", "eu-west unreachable since hh:mm:ss", func(s string) bool {
		return strings.HasPrefix(s, "eu-west unreachable ") && clockTime.MatchString(s)
	})
	waitText(t, ctx, "reach-us-east", "reachable", contains("reachable"))
	if s, _ := text(ctx, "alert-region-us-east"); s != "" {
		t.Errorf("us-east is reachable, yet the page alerts %q", s)
	}
}

// TestBrowserStorageOfflineAndDisconnect checks the page's other degraded
// states: a storage service that does not answer, and the dashboard itself
// going away (the page must not keep showing frozen numbers as live).
func TestBrowserStorageOfflineAndDisconnect(t *testing.T) {
	ctx := browser(t)
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		PushInterval: 200 * time.Millisecond,
		StorageURL:   "http://" + closedAddr(t), StoragePoll: 100 * time.Millisecond,
	})
	navigate(t, ctx, base)
	waitText(t, ctx, "conn-state", `"live"`, func(s string) bool { return s == "live" })
	waitText(t, ctx, "storage-state", "Storage offline since hh:mm:ss", func(s string) bool {
		return strings.HasPrefix(s, "Storage offline") && clockTime.MatchString(s)
	})
	waitText(t, ctx, "alert-storage", "a storage alert", contains("Storage offline since"))
	waitText(t, ctx, "history-state", "history unavailable: storage offline", contains("history unavailable: storage offline"))

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitText(t, ctx, "conn-state", `"disconnected"`, func(s string) bool { return s == "disconnected" })
	waitText(t, ctx, "alert-conn", "the page saying its numbers are frozen", contains("frozen"))
}

// TestScreenshot saves a 1600x1000 screenshot of a running dashboard, for
// the README. It runs only when asked:
//
//	TELEMETRY_SCREENSHOT_URL=http://127.0.0.1:8080 TELEMETRY_SCREENSHOT_OUT=$PWD/docs/screenshot.png \
//	go test -run TestScreenshot ./dashboard
func TestScreenshot(t *testing.T) {
	url, out := os.Getenv("TELEMETRY_SCREENSHOT_URL"), os.Getenv("TELEMETRY_SCREENSHOT_OUT")
	if url == "" || out == "" {
		t.Skip("set TELEMETRY_SCREENSHOT_URL and TELEMETRY_SCREENSHOT_OUT to take a screenshot of a running dashboard")
	}
	ctx := browser(t)
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(vctx, chromedp.EmulateViewport(1600, 1000)); err != nil {
		t.Fatalf("setting the viewport: %v", err)
	}
	navigate(t, ctx, url)
	waitText(t, ctx, "conn-state", `"live"`, func(s string) bool { return s == "live" })
	// Let the sparklines fill and the history load: the picture covers
	// TELEMETRY_SCREENSHOT_SNAPSHOTS pushes (default 20) after the first.
	first := snapshotSeq(waitText(t, ctx, "snapshot-seq", "a snapshot", func(s string) bool { return snapshotSeq(s) > 0 }))
	more := uint64(envInt(t, "TELEMETRY_SCREENSHOT_SNAPSHOTS", 20))
	waitText(t, ctx, "snapshot-seq", fmt.Sprintf("snapshot %d", first+more), func(s string) bool { return snapshotSeq(s) >= first+more })
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

// snapshotSeq reads the sequence number out of the page's "snapshot N at
// hh:mm:ss" line; 0 if there is none yet.
func snapshotSeq(line string) uint64 {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "snapshot" {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n
}

// TestBrowserHistoryChart checks that the page charts the history the
// storage service serves (here a stand-in serving the agreed JSON).
func TestBrowserHistoryChart(t *testing.T) {
	ctx := browser(t)
	url, js, _ := startRegion(t)
	var failedOver atomic.Bool
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/status":
			region := "us-east"
			if failedOver.Load() {
				region = "eu-west"
			}
			io.WriteString(w, `{"state":"ok","rows_stored":30,"readings_stored":10,"last_insert":"`+time.Now().UTC().Format(time.RFC3339)+
				`","region":"`+region+`","home_region":"us-east"}`)
		case "/api/history":
			var pts []string
			end := time.Now().UTC().Truncate(time.Minute)
			for i := 10; i >= 0; i-- {
				pts = append(pts, fmt.Sprintf(`{"minute":%q,"count":60,"avg":%d,"min":%d,"max":%d,"p95":%d}`,
					end.Add(-time.Duration(i)*time.Minute).Format(time.RFC3339), 20+i%3, 18, 24, 23))
			}
			fmt.Fprintf(w, `{"metric":%q,"minutes":30,"series":[{"region":"us-east","device_type":"thermostat","points":[%s]}]}`,
				r.URL.Query().Get("metric"), strings.Join(pts, ","))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(storage.Close)
	d, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		PushInterval: 200 * time.Millisecond, StorageURL: storage.URL, StoragePoll: 100 * time.Millisecond,
	})
	// A scenario a few minutes ago is marked on the history chart.
	d.MarkScenario(ScenarioEvent{Run: 1, Scenario: "clickhouse-outage", Kind: ScenarioStart, Time: time.Now().Add(-4 * time.Minute)})
	d.MarkScenario(ScenarioEvent{Run: 1, Scenario: "clickhouse-outage", Kind: ScenarioEnd, Time: time.Now().Add(-3 * time.Minute)})
	waitConsuming(t, base)
	keepPublishing(t, js, "us-east")
	navigate(t, ctx, base)
	waitText(t, ctx, "storage-state", `"Storage writing"`, contains("Storage writing"))
	waitText(t, ctx, "storage-readings", "10 readings stored", func(s string) bool { return s == "10" })
	waitText(t, ctx, "storage-detail", "the region storage reads from", contains("from us-east"))
	failedOver.Store(true)
	waitText(t, ctx, "storage-state", `"from eu-west (failed over)"`, contains("Storage writing from eu-west (failed over)"))
	waitText(t, ctx, "tab-temperature_c", "a tab for temperature_c", contains("temperature_c"))
	waitText(t, ctx, "history-legend", "the chart's legend", contains("us-east"))
	waitJS(t, ctx, markers("history-chart"), "the clickhouse-outage marker", is("clickhouse-outage"))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hidden, err := chromedp.Run(hctx, chromedp.Evaluate[bool](`document.getElementById("history-state").hidden`))
	if err != nil || !hidden {
		s, _ := text(ctx, "history-state")
		t.Errorf("history state shown (%q, %v) over a chart that has data", s, err)
	}
	if out := os.Getenv("TELEMETRY_HISTORY_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(hctx, chromedp.CaptureScreenshot())
		if err == nil {
			err = os.WriteFile(out, png, 0o644)
		}
		if err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
}
