package dashboard

import (
	"slices"
	"sync"
	"time"
)

// MaxScenarioMarkers bounds the scenario markers a dashboard keeps. Policy
// when full: drop the oldest (the history chart spans 30 minutes, which a
// talk fills with fewer runs than this).
const MaxScenarioMarkers = 20

// Kinds of ScenarioEvent, the same as package scenario's.
const (
	ScenarioStart = "start"
	ScenarioStep  = "step"
	ScenarioEnd   = "end"
)

// ScenarioEvent is one entry of a presenter scenario's event log, as
// package scenario's Runner reports it: its start, a step or its end.
type ScenarioEvent struct {
	Run      int
	Scenario string
	Kind     string // ScenarioStart, ScenarioStep or ScenarioEnd
	Text     string
	Time     time.Time // zero: now
}

// scenarioLog keeps what the page draws of the presenter scenarios. It is
// fed from outside (the demo wires its scenario runner to it), so it has a
// lock of its own, apart from the snapshot's.
type scenarioLog struct {
	mu      sync.Mutex
	markers []ScenarioMarker
	ledger  *ScenarioLedger
}

// MarkScenario records a presenter scenario's start, step or end: the page
// draws each run as a band on its charts, labelled with the scenario, and
// shows the running one's phase. A start hides the previous run's ledger.
// Safe for concurrent use; it does not block.
func (d *Dashboard) MarkScenario(e ScenarioEvent) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l := &d.scenarios
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.marker(e.Run, e.Scenario, e.Time)
	m.Phase = e.Text
	switch e.Kind {
	case ScenarioStart:
		m.Start = e.Time
		l.ledger = nil
	case ScenarioEnd:
		m.End = e.Time
	}
}

// ShowLedger puts a finished scenario's conservation ledger on the page,
// until the next scenario starts (or a viewer dismisses it). It also ends
// the run's marker if no end was marked. A ledger older than a run that
// has already started is ignored. Safe for concurrent use.
func (d *Dashboard) ShowLedger(ledger ScenarioLedger) {
	if ledger.End.IsZero() {
		ledger.End = time.Now()
	}
	l := &d.scenarios
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.markers {
		if m.Run > ledger.Run {
			return
		}
	}
	m := l.marker(ledger.Run, ledger.Scenario, ledger.End)
	if m.End.IsZero() {
		m.End = ledger.End
	}
	l.ledger = &ledger
}

// marker returns run's marker, adding one that starts at start if there is
// none. The caller holds l.mu.
func (l *scenarioLog) marker(run int, scenario string, start time.Time) *ScenarioMarker {
	for i := range l.markers {
		if l.markers[i].Run == run {
			return &l.markers[i]
		}
	}
	l.markers = append(l.markers, ScenarioMarker{Run: run, Scenario: scenario, Start: start})
	if n := len(l.markers) - MaxScenarioMarkers; n > 0 {
		l.markers = slices.Delete(l.markers, 0, n)
	}
	return &l.markers[len(l.markers)-1]
}

// fill copies the markers and the ledger into s.
func (l *scenarioLog) fill(s *Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Scenarios = append(make([]ScenarioMarker, 0, len(l.markers)), l.markers...)
	if l.ledger != nil {
		cp := *l.ledger
		s.Ledger = &cp
	}
}
