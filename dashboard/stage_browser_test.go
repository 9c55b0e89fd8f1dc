package dashboard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/stream"
)

// stageCheck lists, in words, what is wrong with the page as the audience
// sees it in this viewport: sideways scroll, a panel not whole on screen,
// text outside its panel or cut, text too small for the back of a room,
// the ledger card over a region's card (its rate above all), storage or
// replication (it may cover part of the history), scenario labels over
// each other.
const stageCheck = `(() => {
  const vw = innerWidth, vh = innerHeight, out = [];
  const de = document.documentElement;
  if (de.scrollWidth > vw) out.push("the page is " + de.scrollWidth + " px wide in " + vw);
  const box = (e) => e.getBoundingClientRect();
  const rect = (r) => Math.round(r.left) + "," + Math.round(r.top) + "-" + Math.round(r.right) + "," + Math.round(r.bottom);
  const panels = [...document.querySelectorAll(".card"), ...["storage-panel", "replication-panel", "history-panel"].map((id) => document.getElementById(id))];
  for (const p of panels) {
    const r = box(p);
    if (r.left < 0 || r.top < 0 || r.right > vw + 0.5 || r.bottom > vh + 0.5) out.push((p.id || p.className) + " not whole on screen: " + rect(r));
  }
  const shown = (e) => e.offsetParent !== null && getComputedStyle(e).visibility !== "hidden";
  for (const e of document.querySelectorAll("main *")) {
    if (!shown(e)) continue;
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const panel = e.closest(".card, .panel");
    const r = box(e), p = panel ? box(panel) : null;
    const what = (e.id || e.tagName.toLowerCase()) + " " + JSON.stringify(e.textContent.trim().slice(0, 30));
    if (p && (r.left < p.left - 0.5 || r.right > p.right + 0.5 || r.bottom > p.bottom + 0.5)) out.push(what + " outside its panel: " + rect(r) + " in " + rect(p));
    if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== "visible") out.push(what + " cut: " + e.scrollWidth + " px in " + e.clientWidth);
    const size = parseFloat(getComputedStyle(e).fontSize);
    if (size < 15) out.push(what + " in " + size + " px type");
  }
  const ledger = document.getElementById("ledger");
  if (!ledger.hidden) {
    const l = box(ledger);
    if (l.left < 0 || l.top < 0 || l.right > vw + 0.5 || l.bottom > vh + 0.5) out.push("the ledger card not whole on screen: " + rect(l));
    for (const e of ledger.querySelectorAll("*")) {
      const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || !shown(e)) continue;
      const r = box(e);
      if (r.left < l.left || r.right > l.right || r.bottom > l.bottom) out.push("ledger " + (e.id || e.className) + " outside the card: " + rect(r) + " in " + rect(l));
    }
    for (const p of [...document.querySelectorAll(".rate, .card"), ...["storage-panel", "replication-panel"].map((id) => document.getElementById(id))]) {
      const r = box(p);
      if (r.left < l.right && l.left < r.right && r.top < l.bottom && l.top < r.bottom) out.push("the ledger card covers " + (p.id || p.className));
    }
  }
  // Scenario labels on the history chart and the sparklines: none over
  // another.
  for (const c of document.querySelectorAll("canvas")) {
    const boxes = (c.dataset.labels || "").split(";").filter(Boolean).map((b) => b.split(",").map(Number));
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i], boxes[j]];
      if (a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]) out.push(c.id + ": scenario labels overlap: " + a + " and " + b);
    }
  }
  return out;
})()`

// stageStorage stands in for storage's API with numbers as large as a
// day at the booth makes them.
func stageStorage(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/status":
			io.WriteString(w, `{"state":"ok","rows_stored":38123456,"readings_stored":12707818,"last_insert":"`+time.Now().UTC().Format(time.RFC3339)+
				`","consumer_pending":1234,"region":"us-east","home_region":"us-east"}`)
		case "/api/history":
			end := time.Now().UTC().Truncate(time.Minute)
			var series []string
			for i, region := range stream.DefaultRegions {
				var pts []string
				for m := 30; m >= 0; m-- {
					pts = append(pts, fmt.Sprintf(`{"minute":%q,"count":3000,"avg":%d,"min":%d,"max":%d,"p95":%d}`,
						end.Add(-time.Duration(m)*time.Minute).Format(time.RFC3339), 20+i+m%3, 17+i, 25+i, 24+i))
				}
				series = append(series, fmt.Sprintf(`{"region":%q,"device_type":"thermostat","points":[%s]}`, region, strings.Join(pts, ",")))
			}
			fmt.Fprintf(w, `{"metric":%q,"minutes":30,"series":[%s]}`, r.URL.Query().Get("metric"), strings.Join(series, ","))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestBrowserStageSizes: the page on a projector at 1280x720, 1600x900
// and 1920x1080, as the audience sees it with three live regions, storage,
// a cut link in the replication matrix, the history with scenario bands
// and a scenario's ledger card: no sideways scroll, the region cards,
// storage, replication and history whole on screen, no text outside its
// panel or cut, nothing under 15 px, the ledger card clear of every
// region's rate. With TELEMETRY_STAGE_SCREENSHOTS=dir it writes a picture
// of each size there (docs/stage-*.png).
func TestBrowserStageSizes(t *testing.T) {
	ctx := browser(t)
	regions := testharness.Regions(t)
	// The demo's mender, so that a source nats-server set up before its
	// region answered starts at once rather than 30 s later.
	urls := map[string]string{}
	for _, r := range stream.DefaultRegions {
		urls[r] = regions.URL(r)
	}
	rs, conns, err := stream.Connect(urls, stream.DefaultRegions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	mender, err := regions.NewMender(stream.DefaultTopology(stream.DefaultRegions), func(ctx context.Context) []stream.RegionStatus {
		return stream.Status(ctx, rs, stream.DefaultRegions)
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMender := context.WithCancel(context.Background())
	t.Cleanup(stopMender)
	go mender.Run(mctx)
	for _, r := range stream.DefaultRegions {
		js, err := jetstream.NewWithDomain(testharness.Connect(t, regions.URL(r)), r)
		if err != nil {
			t.Fatal(err)
		}
		keepPublishing(t, js, r)
		// A hostile burst's worth of dead letters, every reason the
		// simulator sends: the card lists them.
		for i, reason := range []string{"bad_json", "schema", "oversized", "stale", "future", "bad_topic", "spoofed"} {
			for range i + 1 {
				publish(t, js, deadLetter(protocol.DeadLetterSubject(r, protocol.Reason(reason)), reason))
			}
		}
	}
	d, base := startDashboard(t, Config{
		NATSURL: regions.URLAs("us-east", "dashboard"), Domain: "us-east", Regions: stream.DefaultRegions,
		PushInterval: 200 * time.Millisecond, StorageURL: stageStorage(t), StoragePoll: 200 * time.Millisecond,
		Replication: func(context.Context) ([]ReplicationLag, error) {
			var out []ReplicationLag
			for _, to := range stream.DefaultRegions {
				for _, from := range stream.DefaultRegions {
					if from == to {
						continue
					}
					l := ReplicationLag{From: from, To: to, State: stream.LinkUp, Connected: true}
					if from == "ap-south" {
						l = ReplicationLag{From: from, To: to, State: stream.LinkDown, Messages: 123456, Seconds: 1234.5, HeardAgo: 1234.5}
					}
					out = append(out, l)
				}
			}
			return out, nil
		},
	})
	now := time.Now()
	for i, s := range []string{"hostile-burst", "cut-region", "kill-ingest", "clickhouse-outage", "reboot-storm"} {
		start := now.Add(-time.Duration(20-3*i) * time.Minute)
		d.MarkScenario(ScenarioEvent{Run: i + 1, Scenario: s, Kind: ScenarioStart, Time: start})
		d.MarkScenario(ScenarioEvent{Run: i + 1, Scenario: s, Kind: ScenarioEnd, Time: start.Add(time.Minute)})
	}
	d.ShowLedger(ScenarioLedger{Run: 5, Scenario: "reboot-storm", Label: "reboot-storm 30", End: now, Quarantined: 1234, OK: true, Counts: ledger.Counts{Sent: 123456, Acked: 123456, Stored: 123456}})
	waitConsuming(t, base)
	// Every region's readings reach the feed before the page is judged.
	waitFor(t, 60*time.Second, func() error {
		for _, st := range stream.Status(context.Background(), rs, stream.DefaultRegions) {
			for _, src := range st.Sources {
				if src.State != stream.LinkUp && src.State != stream.LinkIdle {
					return fmt.Errorf("%s <- %s: %s, %d behind, %s", st.Region, src.From, src.State, src.LagMessages, src.Error)
				}
			}
		}
		return nil
	})

	for _, size := range []struct{ w, h int64 }{{1280, 720}, {1600, 900}, {1920, 1080}} {
		name := fmt.Sprintf("%dx%d", size.w, size.h)
		t.Run(name, func(t *testing.T) {
			vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := chromedp.Do(vctx, chromedp.EmulateViewport(size.w, size.h))
			cancel()
			if err != nil {
				t.Fatalf("setting the viewport: %v", err)
			}
			navigate(t, ctx, base)
			for _, r := range stream.DefaultRegions {
				waitText(t, ctx, "rate-"+r, r+"'s rate", func(s string) bool { return s != "—" && s != "0.0" })
			}
			waitText(t, ctx, "ledger-lost", "the ledger card", is("0"))
			waitText(t, ctx, "repl-ap-south-us-east", "a cut link's backlog and silence", is("down123,456 msgsheard 1235 s ago"))
			waitJS(t, ctx, markers("history-chart"), "the scenario bands", contains("reboot-storm"))
			if dir := os.Getenv("TELEMETRY_STAGE_SCREENSHOTS"); dir != "" {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
				cancel()
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, "stage-"+name+".png"), png, 0o644)
				}
				if err != nil {
					t.Errorf("screenshot: %v", err)
				}
			}
			var problems []string
			waitFor(t, 10*time.Second, func() error {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				var err error
				if problems, err = chromedp.Run(cctx, chromedp.Evaluate[[]string](stageCheck)); err != nil {
					return err
				}
				if len(problems) > 0 {
					return fmt.Errorf("at %s:\n  %s", name, strings.Join(problems, "\n  "))
				}
				return nil
			})
		})
	}
}
