package dashboard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestBrowserReloadKeepsTheStory: readings stop for a while (a scenario's
// drop) and come back; a reload, or a tab opened afterwards, draws the
// sparkline's drop and recovery again, from /api/recent, instead of an
// empty line.
func TestBrowserReloadKeepsTheStory(t *testing.T) {
	ctx := browser(t)
	url, js, _ := startRegion(t)
	_, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		PushInterval: 200 * time.Millisecond, Window: time.Second, StorageOffReason: "not in this test",
	})
	waitConsuming(t, base)

	var paused atomic.Bool
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for seq := uint64(1); pctx.Err() == nil; seq++ {
			time.Sleep(20 * time.Millisecond) // the devices' pace
			if paused.Load() {
				continue
			}
			r := protocol.Reading{Version: protocol.Version1, Device: "th-1", Boot: 1, Seq: seq, TS: time.Now().UnixMilli(),
				Metrics: []protocol.Metric{{Name: "temperature_c", Value: 20}}}
			_, _ = js.PublishMsg(pctx, &nats.Msg{Subject: "telemetry.us-east.thermostat.th-1", Data: protocol.AppendEncode(nil, r),
				Header: nats.Header{"Nats-Msg-Id": []string{r.ID()}}})
		}
	}()
	rate := func(want func(float64) bool) {
		t.Helper()
		waitFor(t, 20*time.Second, func() error {
			s, err := getSnapshot(t, base)
			if err != nil {
				return err
			}
			if r := s.Regions[0].Rate; !want(r) {
				return fmt.Errorf("rate %v", r)
			}
			return nil
		})
	}
	// served is /api/recent's us-east rates, as the page's sparkline
	// records them.
	served := func() string {
		var r Recent
		if err := getJSON(base+"/api/recent", &r); err != nil {
			return ""
		}
		var out []string
		for _, p := range r.Regions["us-east"] {
			out = append(out, strconv.Itoa(int(p[1]+0.5)))
		}
		return strings.Join(out, ",")
	}
	// The story, as the server records it: flowing, a drop to zero, back.
	until := func(phase int, what string) {
		t.Helper()
		waitFor(t, 30*time.Second, func() error {
			if s := served(); phases(s) < phase {
				return fmt.Errorf("/api/recent has no %s yet: %s", what, s)
			}
			return nil
		})
	}
	navigate(t, ctx, base)
	rate(func(r float64) bool { return r > 10 })
	until(1, "flow")
	paused.Store(true)
	until(2, "drop")
	paused.Store(false)
	until(3, "recovery")

	// A reload: within a couple of pushes the line has it all again.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := chromedp.Do(rctx, chromedp.Reload())
	cancel()
	if err != nil {
		t.Fatalf("reloading: %v", err)
	}
	start := time.Now()
	waitJS(t, ctx, `document.getElementById("spark-us-east").dataset.rates || ""`, "a drop and a recovery on the sparkline", dropAndRecovery)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the story took %v to come back after the reload", took)
	}
}

// dropAndRecovery reports whether rates, comma-separated, rise above zero,
// fall to zero, and rise again.
func dropAndRecovery(rates string) bool { return phases(rates) == 3 }

// phases counts how much of that story rates tell: 1 once a rate above
// zero came, 2 once a zero followed, 3 once a rate above zero followed that.
func phases(rates string) int {
	phase := 0
	for _, f := range strings.Split(rates, ",") {
		v, err := strconv.Atoi(f)
		if err != nil {
			return 0
		}
		switch {
		case phase == 0 && v > 0, phase == 2 && v > 0:
			phase++
		case phase == 1 && v == 0:
			phase++
		}
	}
	return phase
}

func getJSON(url string, v any) error { return testharness.GetJSON(url, v) }
