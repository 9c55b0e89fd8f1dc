package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/scenario"
)

const stageToken = "stage-t0ken"

// stageTarget stands in for the demo's pipeline under the scenario runner:
// the faults do nothing, the witnesses publish for their duration and
// report a fixed ledger. The pipeline itself is exercised by the scenario
// tests of cmd/telemetry; here the page is under test.
type stageTarget struct{ ledger scenario.Ledger }

// Check refuses the ClickHouse outage as a demo without storage does.
func (stageTarget) Check(req scenario.Request) error {
	if req.Name == scenario.ClickHouseOutage {
		return fmt.Errorf("%w: storage is off (--clickhouse none)", scenario.ErrUnavailable)
	}
	return nil
}
func (stageTarget) CutRegion(string) error                      { return nil }
func (stageTarget) HealRegion(string) error                     { return nil }
func (stageTarget) StopStreamLeader(string) (string, error)     { return "us-east-1", nil }
func (stageTarget) StartServer(string) error                    { return nil }
func (stageTarget) CrashIngest(context.Context, string) error   { return nil }
func (stageTarget) StartIngest(context.Context, string) error   { return nil }
func (stageTarget) KillClickHouse() error                       { return nil }
func (stageTarget) RestartClickHouse(ctx context.Context) error { return nil }

// Fleet: no fleet of the demo's own, so every scenario runs witnesses.
func (stageTarget) Fleet() ([]devices.DeviceSent, bool) { return nil, false }
func (stageTarget) Stored(context.Context, []ledger.Range) ([]uint64, error) {
	return nil, errors.New("no fleet")
}
func (stageTarget) StoredSeqs(context.Context, []ledger.Range) ([][]uint64, error) {
	return nil, errors.New("no fleet")
}
func (stageTarget) Suppressed() (map[string]uint64, bool) { return nil, false }

func (s stageTarget) Witness(ctx context.Context, w scenario.Witness) (scenario.Ledger, error) {
	select {
	case <-time.After(w.Duration):
	case <-ctx.Done():
		return scenario.Ledger{}, ctx.Err()
	}
	l := s.ledger
	l.Devices = w.Devices
	return l, nil
}

// presenterSite serves the dashboard and the presenter API on one address,
// with the runner's events and results fed to the dashboard, as `telemetry
// demo --presenter-token` does.
func presenterSite(t *testing.T, url string) (*Dashboard, string) {
	t.Helper()
	d, _ := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east", "eu-west"},
		PushInterval: 200 * time.Millisecond, Presenter: true,
	})
	target := stageTarget{ledger: scenario.Ledger{Quarantined: 150, HostileSent: 150, OK: true, Counts: ledger.Counts{Sent: 150, Acked: 150, Stored: 150}}}
	runner, err := scenario.New(scenario.Config{
		Regions: []string{"us-east", "eu-west"}, Window: time.Second, Lead: 100 * time.Millisecond, Tail: 100 * time.Millisecond,
		OnEvent: func(e scenario.Event) {
			d.MarkScenario(ScenarioEvent{Run: e.Run, Scenario: e.Scenario, Kind: e.Kind, Text: e.Text, Time: e.Time})
		},
		OnResult: func(r scenario.Result) {
			l := ScenarioLedger{Run: r.Run, Scenario: r.Request.Name, Label: r.Request.String(), End: r.End, OK: r.OK, Error: r.Error}
			if r.Ledger != nil {
				l.Sent, l.Acked, l.Stored, l.Quarantined, l.HostileSent, l.Lost = r.Ledger.Sent, r.Ledger.Acked, r.Ledger.Stored, r.Ledger.Quarantined, r.Ledger.HostileSent, r.Ledger.Lost
			}
			d.ShowLedger(l)
		},
	}, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	mux := http.NewServeMux()
	api := scenario.Handler(runner, stageToken)
	mux.Handle("/api/scenario", api)
	mux.Handle("/api/scenario/", api)
	mux.Handle("/", d.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return d, srv.URL
}

// waitJS polls the page until the JavaScript expression js (a string) is
// accepted by ok.
func waitJS(t *testing.T, ctx context.Context, js, what string, ok func(string) bool) string {
	t.Helper()
	var last string
	waitFor(t, 60*time.Second, func() error {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ectx, chromedp.Evaluate[string](js))
		if err != nil {
			return err
		}
		last = s
		if !ok(s) {
			return fmt.Errorf("%s is %q, want %s", js, s, what)
		}
		return nil
	})
	return last
}

// shown is a JavaScript expression: "shown" when the element with id is on
// screen, else why not.
func shown(id string) string {
	return fmt.Sprintf(`(() => { const e = document.getElementById(%q); if (!e) return "missing"; `+
		`return e.offsetParent !== null || getComputedStyle(e).position === "fixed" && !e.hidden ? "shown" : "hidden"; })()`, id)
}

func markers(id string) string {
	return fmt.Sprintf(`document.getElementById(%q).dataset.markers || ""`, id)
}

func is(want string) func(string) bool { return func(s string) bool { return s == want } }

// click clicks the element with id as a mouse would, once it is visible.
func click(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(cctx, chromedp.Click(chromedp.ID(id))); err != nil {
		t.Fatalf("clicking #%s: %v", id, err)
	}
}

// TestBrowserPresenterPanel drives the presenter panel: it asks for the
// token and says so when the API refuses it (401); with the token from the
// address it lists the scenarios and starts one; the run is marked on the
// charts and ends with its ledger on screen, green with lost 0; a ledger
// with losses is red.
func TestBrowserPresenterPanel(t *testing.T) {
	ctx := browser(t)
	url, js, _ := startRegion(t)
	d, base := presenterSite(t, url)
	waitConsuming(t, base)
	keepPublishing(t, js, "us-east")
	navigate(t, ctx, base)
	waitText(t, ctx, "conn-state", `"live"`, is("live"))

	// No token yet: the panel asks for it.
	waitJS(t, ctx, shown("presenter-login"), "the token form", is("shown"))
	waitJS(t, ctx, shown("presenter-controls"), "no controls before the token", is("hidden"))
	waitJS(t, ctx, shown("ledger"), "no ledger before any scenario", is("hidden"))

	// A wrong token is refused, and the page says why.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := chromedp.Do(sctx, chromedp.SendKeys(chromedp.ID("presenter-token"), "not-the-token"))
	cancel()
	if err != nil {
		t.Fatalf("typing the token: %v", err)
	}
	click(t, ctx, "presenter-unlock")
	waitText(t, ctx, "presenter-error", "the API's 401", contains("401"))
	waitJS(t, ctx, shown("presenter-controls"), "no controls with a wrong token", is("hidden"))

	// The token in the address unlocks the panel, which lists the
	// scenarios from the API, and leaves the address.
	navigate(t, ctx, base+"/#token="+stageToken)
	for _, s := range scenario.Specs() {
		waitText(t, ctx, "scenario-"+s.Name, "a button for "+s.Name, contains(s.Name))
	}
	waitJS(t, ctx, shown("presenter-error"), "the error gone", is("hidden"))
	if h := waitJS(t, ctx, `location.hash`, "no hash", func(string) bool { return true }); h != "" {
		t.Errorf("the token stays in the address: %q", h)
	}
	waitText(t, ctx, "presenter-phase", "waiting for a choice", contains("pick a scenario"))

	// Start one from the panel: marked on the charts while it runs, then
	// its ledger, green, lost 0.
	click(t, ctx, "scenario-hostile-burst")
	waitJS(t, ctx, markers("spark-us-east"), "a hostile-burst marker", contains("hostile-burst"))
	waitJS(t, ctx, markers("spark-eu-west"), "a hostile-burst marker", contains("hostile-burst"))
	waitText(t, ctx, "ledger-title", "hostile-burst: nothing lost", contains("hostile-burst 300: nothing lost"))
	waitJS(t, ctx, `document.getElementById("ledger").className`, "green", is("ledger ok"))
	for id, want := range map[string]string{"ledger-sent": "150", "ledger-stored": "150", "ledger-quarantined": "150", "ledger-lost": "0"} {
		waitText(t, ctx, id, want, is(want))
	}
	waitText(t, ctx, "presenter-phase", "the last run's verdict", contains("hostile-burst OK"))
	if s := d.Snapshot(); len(s.Scenarios) != 1 || s.Scenarios[0].End.IsZero() || s.Ledger == nil || s.Ledger.Lost != 0 {
		t.Errorf("snapshot after the run: markers %+v, ledger %+v", s.Scenarios, s.Ledger)
	}

	// The token is kept for the session; the ledger stays until dismissed.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = chromedp.Do(rctx, chromedp.Reload())
	cancel()
	if err != nil {
		t.Fatalf("reloading: %v", err)
	}
	waitJS(t, ctx, shown("presenter-controls"), "the controls after a reload", is("shown"))
	waitJS(t, ctx, shown("ledger"), "the ledger after a reload", is("shown"))
	click(t, ctx, "ledger-dismiss")
	waitJS(t, ctx, shown("ledger"), "the ledger dismissed", is("hidden"))

	// A run that lost readings ends red.
	now := time.Now()
	d.MarkScenario(ScenarioEvent{Run: 100, Scenario: "kill-ingest", Kind: ScenarioStart, Text: "crashing ingest eu-west", Time: now.Add(-5 * time.Second)})
	waitText(t, ctx, "ledger-title", "kill-ingest running", contains("kill-ingest running"))
	waitText(t, ctx, "ledger-detail", "its phase", contains("crashing ingest eu-west"))
	d.ShowLedger(ScenarioLedger{Run: 100, Scenario: "kill-ingest", Label: "kill-ingest eu-west", End: now, Counts: ledger.Counts{Sent: 20, Acked: 20, Stored: 17, Lost: 3},
		Duplicates: 12, DuplicatedTop: []string{"th-00007 9", "th-00002 3"}})
	waitText(t, ctx, "ledger-title", "3 LOST", contains("kill-ingest eu-west: 3 LOST"))
	// Duplicates JetStream suppressed are shown, by device.
	waitText(t, ctx, "ledger-detail", "the duplicates", contains("12 duplicates suppressed (th-00007 9, th-00002 3)"))
	waitJS(t, ctx, `document.getElementById("ledger").className`, "red", is("ledger bad"))
	waitText(t, ctx, "ledger-lost", "3", is("3"))
	waitJS(t, ctx, markers("spark-us-east"), "both markers", is("hostile-burst,kill-ingest"))
}

// TestBrowserPresenterPanelOff: a dashboard without the presenter API (as
// in compose) shows no panel and calls no API, and still draws the markers
// it is given.
func TestBrowserPresenterPanelOff(t *testing.T) {
	ctx := browser(t)
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"}, PushInterval: 200 * time.Millisecond})
	d.MarkScenario(ScenarioEvent{Run: 1, Scenario: "cut-region", Kind: ScenarioStart, Text: "cutting us-east off", Time: time.Now().Add(-20 * time.Second)})
	d.MarkScenario(ScenarioEvent{Run: 1, Scenario: "cut-region", Kind: ScenarioEnd, Text: "lost 0", Time: time.Now().Add(-5 * time.Second)})
	d.ShowLedger(ScenarioLedger{Run: 1, Scenario: "cut-region", Label: "cut-region us-east", OK: true, Counts: ledger.Counts{Sent: 7, Acked: 7, Stored: 7}})
	navigate(t, ctx, base+"/#token=anything")
	waitText(t, ctx, "conn-state", `"live"`, is("live"))
	waitText(t, ctx, "ledger-lost", "0", is("0"))
	waitJS(t, ctx, markers("spark-us-east"), "the cut-region marker", is("cut-region"))
	for _, id := range []string{"presenter", "presenter-toggle"} {
		if s := waitJS(t, ctx, shown(id), "hidden", func(string) bool { return true }); s != "hidden" {
			t.Errorf("#%s is %s without a presenter API", id, s)
		}
	}
	if s, _ := text(ctx, "presenter-error"); strings.TrimSpace(s) != "" && !strings.Contains(s, "404") {
		t.Errorf("presenter error %q", s)
	}
}

// TestBrowserRefusalStaysInThePanel: a scenario the API refuses (409:
// storage off, or another scenario running) shows its message in the
// panel, and the panel's polls in between do not clear it; the next
// action does.
func TestBrowserRefusalStaysInThePanel(t *testing.T) {
	ctx := browser(t)
	url, _, _ := startRegion(t)
	_, base := presenterSite(t, url)
	waitConsuming(t, base)
	navigate(t, ctx, base+"/#token="+stageToken)
	waitText(t, ctx, "scenario-"+scenario.ClickHouseOutage, "the outage's button", contains(scenario.ClickHouseOutage))

	stays := func(what, want string) {
		t.Helper()
		waitText(t, ctx, "presenter-error", what, contains(want))
		// Two polls of the panel (every 2 s) later, still there.
		deadline := time.Now().Add(4500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if s, err := text(ctx, "presenter-error"); err != nil || !strings.Contains(s, want) {
				t.Fatalf("%s: the panel says %q (%v) %v after the refusal", what, s, err, time.Until(deadline))
			}
			if h := waitJS(t, ctx, shown("presenter-error"), "", func(string) bool { return true }); h != "shown" {
				t.Fatalf("%s: the message is %s", what, h)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	click(t, ctx, "scenario-"+scenario.ClickHouseOutage)
	stays("409, storage off", "409: ")
	stays("409, storage off", "storage is off")

	// The next action replaces it: a scenario that starts clears it.
	click(t, ctx, "scenario-hostile-burst")
	waitJS(t, ctx, shown("presenter-error"), "the message cleared by the next action", is("hidden"))
	waitText(t, ctx, "ledger-title", "hostile-burst over", contains("nothing lost"))

	// Busy: a scenario started elsewhere (the CLI, another presenter)
	// runs; the page presses before its buttons know.
	req, _ := http.NewRequest(http.MethodPost, base+"/api/scenario/hostile-burst?duration=20s", nil)
	req.Header.Set("Authorization", "Bearer "+stageToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting a scenario through the API: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`startScenario({name: "hostile-burst"}), null`)); err != nil {
		t.Fatalf("pressing: %v", err)
	}
	stays("409, busy", "already running")
}
