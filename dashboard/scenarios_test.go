package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/ledger"
)

// TestScenarioMarkersAndLedgerInTheSnapshot follows two scenario runs
// through the snapshot: a marker per run that ends when the run ends, the
// ledger shown once a run ends and hidden when the next starts.
func TestScenarioMarkersAndLedgerInTheSnapshot(t *testing.T) {
	d, err := New(Config{Listen: "127.0.0.1:0", Presenter: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t0 := time.Now().Add(-time.Minute).Round(time.Millisecond)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	mark := func(run int, kind, text string, s int) {
		d.MarkScenario(ScenarioEvent{Run: run, Scenario: "cut-region", Kind: kind, Text: text, Time: at(s)})
	}

	s := d.Snapshot()
	if !s.Presenter || s.Scenarios == nil || len(s.Scenarios) != 0 || s.Ledger != nil {
		t.Fatalf("before any scenario: presenter %v, scenarios %#v, ledger %+v", s.Presenter, s.Scenarios, s.Ledger)
	}

	steps := []struct {
		name   string
		do     func()
		want   []ScenarioMarker
		ledger int // run of the ledger shown, 0 for none
	}{
		{"start", func() { mark(1, ScenarioStart, "cutting eu-west off", 0) },
			[]ScenarioMarker{{Run: 1, Scenario: "cut-region", Start: at(0), Phase: "cutting eu-west off"}}, 0},
		{"step", func() { mark(1, ScenarioStep, "eu-west cut off", 2) },
			[]ScenarioMarker{{Run: 1, Scenario: "cut-region", Start: at(0), Phase: "eu-west cut off"}}, 0},
		{"end and ledger", func() {
			mark(1, ScenarioEnd, "sent 10, lost 0", 20)
			d.ShowLedger(ScenarioLedger{Run: 1, Scenario: "cut-region", Label: "cut-region eu-west", End: at(20), OK: true, Counts: ledger.Counts{Sent: 10, Acked: 10, Stored: 10}})
		}, []ScenarioMarker{{Run: 1, Scenario: "cut-region", Start: at(0), End: at(20), Phase: "sent 10, lost 0"}}, 1},
		{"next start hides the ledger", func() { mark(2, ScenarioStart, "cutting ap-south off", 30) },
			[]ScenarioMarker{
				{Run: 1, Scenario: "cut-region", Start: at(0), End: at(20), Phase: "sent 10, lost 0"},
				{Run: 2, Scenario: "cut-region", Start: at(30), Phase: "cutting ap-south off"},
			}, 0},
		{"a late ledger of an earlier run is ignored", func() {
			d.ShowLedger(ScenarioLedger{Run: 1, Scenario: "cut-region", End: at(31)})
		}, []ScenarioMarker{
			{Run: 1, Scenario: "cut-region", Start: at(0), End: at(20), Phase: "sent 10, lost 0"},
			{Run: 2, Scenario: "cut-region", Start: at(30), Phase: "cutting ap-south off"},
		}, 0},
		{"a ledger ends its marker", func() {
			d.ShowLedger(ScenarioLedger{Run: 2, Scenario: "cut-region", End: at(45), Counts: ledger.Counts{Sent: 5, Acked: 5, Stored: 3, Lost: 2}})
		}, []ScenarioMarker{
			{Run: 1, Scenario: "cut-region", Start: at(0), End: at(20), Phase: "sent 10, lost 0"},
			{Run: 2, Scenario: "cut-region", Start: at(30), End: at(45), Phase: "cutting ap-south off"},
		}, 2},
	}
	for _, st := range steps {
		st.do()
		s := d.Snapshot()
		if len(s.Scenarios) != len(st.want) {
			t.Fatalf("%s: markers %+v, want %+v", st.name, s.Scenarios, st.want)
		}
		for i, m := range s.Scenarios {
			w := st.want[i]
			if m.Run != w.Run || m.Scenario != w.Scenario || !m.Start.Equal(w.Start) || !m.End.Equal(w.End) || m.Phase != w.Phase {
				t.Errorf("%s: marker %d is %+v, want %+v", st.name, i, m, w)
			}
		}
		switch {
		case st.ledger == 0 && s.Ledger != nil:
			t.Errorf("%s: ledger %+v shown, want none", st.name, *s.Ledger)
		case st.ledger != 0 && (s.Ledger == nil || s.Ledger.Run != st.ledger):
			t.Errorf("%s: ledger %+v, want run %d's", st.name, s.Ledger, st.ledger)
		}
	}
	if l := d.Snapshot().Ledger; l == nil || l.Lost != 2 || l.Stored != 3 || l.OK {
		t.Errorf("last ledger %+v, want run 2's with 2 lost", l)
	}

	// The page reads these names.
	b, err := json.Marshal(d.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"presenter":true`, `"scenarios":[{"run":1,"scenario":"cut-region","start":`, `"end":`,
		`"ledger":{"run":2,"scenario":"cut-region","label":"","end":`, `"sent":5`, `"stored":3`, `"quarantined":0`, `"lost":2`, `"ok":false`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("snapshot JSON lacks %s:\n%s", key, b)
		}
	}

	// Markers are bounded: the oldest go first.
	for run := 3; run < 3+MaxScenarioMarkers; run++ {
		mark(run, ScenarioStart, "go", run)
		mark(run, ScenarioEnd, "done", run)
	}
	s = d.Snapshot()
	if len(s.Scenarios) != MaxScenarioMarkers || s.Scenarios[0].Run != 3 || s.Scenarios[MaxScenarioMarkers-1].Run != 2+MaxScenarioMarkers {
		t.Errorf("%d markers from run %d: want the last %d", len(s.Scenarios), s.Scenarios[0].Run, MaxScenarioMarkers)
	}
}

// TestNoPresenterByDefault: a dashboard of its own (compose) has no
// presenter API beside it, and its snapshot says so.
func TestNoPresenterByDefault(t *testing.T) {
	d, err := New(Config{Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := json.Marshal(d.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"presenter":false`, `"scenarios":[]`, `"ledger":null`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("snapshot JSON lacks %s:\n%s", key, b)
		}
	}
}
