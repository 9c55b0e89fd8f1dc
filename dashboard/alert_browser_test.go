package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// beatAsIngest publishes us-east's ingest heartbeat every 200 ms, accepting
// 10 readings per beat (50/s), blocked for the reason in *blocked, until
// the test ends.
func beatAsIngest(t *testing.T, url string, blocked *atomic.Pointer[string]) {
	nc := testharness.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for accepted := uint64(0); ; accepted += 10 {
			hb := stream.IngestHeartbeat{Region: "us-east", Time: time.Now(), Accepted: accepted}
			if why := blocked.Load(); why != nil {
				hb.Blocked, hb.Since = *why, start
			}
			b, _ := json.Marshal(hb)
			_ = nc.Publish(stream.HeartbeatSubject("us-east"), b)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// TestBrowserRegionAlert: what stops a region shows in red on its card and
// in the alerts, and fails /healthz with the reason, within 5 s: first its
// ingest blocked by a full READINGS (ingest's heartbeat), then readings
// dropped before storage stored them (the streams' alerts). The card also
// shows what the region's own ingest accepts, whatever the feed shows.
func TestBrowserRegionAlert(t *testing.T) {
	ctx := browser(t)
	url, js, _ := startRegion(t)
	var blocked atomic.Pointer[string]
	var streamAlert atomic.Pointer[string]
	_, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		PushInterval: 200 * time.Millisecond, StoragePoll: 200 * time.Millisecond, StorageOffReason: "not in this test",
		Alerts: func(context.Context) (map[string]string, error) {
			if a := streamAlert.Load(); a != nil {
				return map[string]string{"us-east": *a}, nil
			}
			return nil, nil
		},
	})
	waitConsuming(t, base)
	keepPublishing(t, js, "us-east")
	beatAsIngest(t, url, &blocked)
	navigate(t, ctx, base)

	waitText(t, ctx, "ingest-us-east", "ingest 50/s", contains("ingest 50"))
	healthIs(t, base, http.StatusOK, "ok")

	for _, why := range []struct {
		text  string
		apply func(string)
	}{
		{"READINGS full in us-east: maximum bytes exceeded", func(s string) { blocked.Store(&s) }},
		{"READINGS full in us-east: 12 readings dropped before storage stored them", func(s string) { blocked.Store(nil); streamAlert.Store(&s) }},
	} {
		why.apply(why.text)
		start := time.Now()
		waitText(t, ctx, "alert-us-east", "the card's alert", contains(why.text))
		waitText(t, ctx, "alert-region-us-east", "the alert banner", contains(why.text))
		healthIs(t, base, http.StatusServiceUnavailable, why.text)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%q took %v to show", why.text, took)
		}
		cls, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("card-us-east").className`))
		if err != nil || !strings.Contains(cls, "alerted") {
			t.Errorf("card class %q (%v), want it alerted", cls, err)
		}
	}

	// Fixed: the card clears, /healthz is ok again.
	streamAlert.Store(nil)
	healthIs(t, base, http.StatusOK, "ok")
	waitJS(t, ctx, `document.getElementById("alert-us-east").hidden ? "hidden" : "shown"`, "the card's alert hidden", is("hidden"))
}

// healthIs waits up to 5 s for /healthz to answer code with a body
// containing want.
func healthIs(t *testing.T, base string, code int, want string) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		got, body, err := health(t, base)
		if err != nil || got != code || !strings.Contains(body, want) {
			return fmt.Errorf("healthz %d %q %v, want %d with %q", got, body, err, code, want)
		}
		return nil
	})
}
