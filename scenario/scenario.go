package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
)

// Names of the scenarios.
const (
	CutRegion        = "cut-region"
	KillIngest       = "kill-ingest"
	ClickHouseOutage = "clickhouse-outage"
	HostileBurst     = "hostile-burst"
	RebootStorm      = "reboot-storm"
	StopLeader       = "stop-leader"
)

// Spec describes one scenario, for usage texts and the presenter API.
type Spec struct {
	Name    string `json:"name"`
	Args    string `json:"args"`
	Summary string `json:"summary"`
}

var specs = []Spec{
	{CutRegion, "<region>", "cut the region off from the others (its link to the hub) for the window, then heal it; the region keeps taking readings and the others catch up"},
	{KillIngest, "<region>", "crash the region's ingest (connection dropped, nothing in flight acknowledged), keep it down for the window, start a fresh one; the broker redelivers, JetStream drops the duplicates"},
	{ClickHouseOutage, "", "kill ClickHouse (SIGKILL) for the window, then restart it; readings wait in JetStream and storage catches up"},
	{HostileBurst, "[count]", "publish about count hostile messages (default 300) among valid readings; each is quarantined under its reason, none is lost"},
	{RebootStorm, "[devices]", "that many devices (default 30) reboot again and again over the window, each reboot a new boot with seq from 1"},
	{StopLeader, "<region>", "stop the NATS server that leads the region's READINGS (a region of several servers: telemetry demo --nats-cluster 3) for the window, then start it again; another server leads within seconds, nothing is lost, and the server catches up"},
}

// Specs lists the scenarios.
func Specs() []Spec { return append([]Spec(nil), specs...) }

func lookup(name string) (Spec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// Request asks for one scenario.
type Request struct {
	Name string
	// Region is the region cut-region and kill-ingest act on.
	Region string
	// Count is how many hostile messages hostile-burst sends, or how many
	// devices reboot-storm reboots; 0 takes the default.
	Count int
	// Window is how long the fault lasts; 0 takes Config.Window.
	Window time.Duration
}

type requestJSON struct {
	Name   string `json:"name"`
	Region string `json:"region,omitempty"`
	Count  int    `json:"count,omitempty"`
	Window string `json:"duration,omitempty"`
}

// MarshalJSON writes the window as "duration", a text such as "10s".
func (r Request) MarshalJSON() ([]byte, error) {
	j := requestJSON{Name: r.Name, Region: r.Region, Count: r.Count}
	if r.Window != 0 {
		j.Window = r.Window.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Request) UnmarshalJSON(b []byte) error {
	var j requestJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Request{Name: j.Name, Region: j.Region, Count: j.Count}
	if j.Window != "" {
		d, err := time.ParseDuration(j.Window)
		if err != nil {
			return fmt.Errorf("window: %w", err)
		}
		r.Window = d
	}
	return nil
}

func (r Request) String() string {
	s := r.Name
	if r.Region != "" {
		s += " " + r.Region
	}
	if r.Count != 0 {
		s += " " + strconv.Itoa(r.Count)
	}
	return s
}

// Errors callers branch on.
var (
	// ErrUnknown: no scenario has that name.
	ErrUnknown = errors.New("unknown scenario")
	// ErrBadRequest: the scenario's arguments are wrong.
	ErrBadRequest = errors.New("bad scenario request")
	// ErrBusy: a scenario is running; one runs at a time.
	ErrBusy = errors.New("a scenario is already running")
	// ErrUnavailable: the pipeline cannot run this scenario (for example,
	// no ClickHouse to read the ledger from).
	ErrUnavailable = errors.New("scenario unavailable")
)

// ParseArgs builds a request from a scenario's name and its arguments as
// typed on the command line: `cut-region eu-west`, `hostile-burst 500`.
func ParseArgs(name string, args []string) (Request, error) {
	spec, ok := lookup(name)
	if !ok {
		return Request{}, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	req := Request{Name: name}
	switch spec.Args {
	case "<region>":
		if len(args) != 1 {
			return req, fmt.Errorf("%w: %s takes one argument, the region", ErrBadRequest, name)
		}
		req.Region = args[0]
	case "[count]", "[devices]":
		if len(args) > 1 {
			return req, fmt.Errorf("%w: %s takes at most one argument, %s", ErrBadRequest, name, spec.Args)
		}
		if len(args) == 1 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return req, fmt.Errorf("%w: %s: %q is not a positive number", ErrBadRequest, name, args[0])
			}
			req.Count = n
		}
	default:
		if len(args) != 0 {
			return req, fmt.Errorf("%w: %s takes no arguments", ErrBadRequest, name)
		}
	}
	return req, nil
}

// Ledger is the conservation ledger of a scenario, once the pipeline has
// drained. It counts every reading the pipeline's own devices (the demo's
// fleet) published during the scenario's window, and the readings and
// hostile messages of the scenario's witness devices when it ran some.
// Sent, Acked, Stored, Lost, Unconfirmed and Missing are over both; Fleet
// and Witnesses give each one's share.
type Ledger struct {
	// Devices counted: the fleet's and the witnesses'.
	Devices int    `json:"devices"`
	Boot    uint64 `json:"boot"` // the witnesses' first boot (reboots count up from it); 0 without witnesses
	// Counts are every reading counted: the pipeline owes every
	// acknowledged one (Lost must be 0); unconfirmed ones were sent without
	// a PUBACK and not stored, so the device would send them again.
	ledger.Counts
	// Quarantined dead letters of the witnesses, by reason in
	// QuarantinedBy: the hostile messages, never dropped.
	Quarantined   uint64            `json:"quarantined"`
	QuarantinedBy map[string]uint64 `json:"quarantined_by_reason"`
	HostileSent   uint64            `json:"hostile_sent"`
	// Misclassified hostile messages were dead-lettered under another
	// reason than they should; HostileMissing were acknowledged and never
	// dead-lettered.
	Misclassified  uint64 `json:"misclassified"`
	HostileMissing uint64 `json:"hostile_missing"`
	// Missing are the first runs of lost or unconfirmed readings.
	Missing []ledger.Range `json:"missing"`
	// Resent readings went out again after a witness reconnected;
	// Duplicates is what JetStream suppressed during the scenario, all
	// devices, and DuplicatesByDevice the same by device: resends, or a
	// reading forged with a real one's identity (nil when unknown).
	Resent             uint64            `json:"resent"`
	Duplicates         *uint64           `json:"duplicates_suppressed,omitempty"`
	DuplicatesByDevice map[string]uint64 `json:"duplicates_by_device,omitempty"`
	// Reboots began a boot within the window; Boots are the (device,
	// boot) pairs counted.
	Reboots   uint64  `json:"reboots"`
	Boots     int     `json:"boots"`
	DrainSecs float64 `json:"drain_seconds"`
	// Fleet is the share of the pipeline's own devices: every reading
	// they published from the scenario's start to the end of its window
	// (Tail after the fault ends). Nil when the pipeline runs no devices
	// of its own.
	Fleet *Tally `json:"fleet"`
	// Witnesses is the share of the scenario's witness devices (ids
	// scn-*), nil when it ran none.
	Witnesses *Tally `json:"witnesses"`
	// OK: nothing lost, every hostile message quarantined as it should and
	// no valid reading quarantined.
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// Event kinds.
const (
	EventStart = "start"
	EventStep  = "step"
	EventEnd   = "end"
)

// Event is one entry of the event log: a scenario's start, a step (the
// fault, the recovery) or its end. The dashboard marks them on its charts.
type Event struct {
	Time     time.Time `json:"time"`
	Run      int       `json:"run"`
	Scenario string    `json:"scenario"`
	Kind     string    `json:"kind"`
	Text     string    `json:"text"`
}

// Result is one run of a scenario. End is zero while it runs.
type Result struct {
	Run     int       `json:"run"`
	Request Request   `json:"request"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end,omitzero"`
	// Ledger is nil while running, or when the scenario failed before its
	// devices could be counted.
	Ledger *Ledger `json:"ledger"`
	Error  string  `json:"error,omitempty"`
	// OK: finished, without error, with an OK ledger.
	OK bool `json:"ok"`
}

// Done reports whether the run has ended.
func (r Result) Done() bool { return !r.End.IsZero() }

// State is what the presenter API's GET returns.
type State struct {
	Scenarios []Spec   `json:"scenarios"`
	Running   *Result  `json:"running"`
	Events    []Event  `json:"events"`
	Results   []Result `json:"results"` // the last ones, oldest first
}

// Result returns the run's result, if it is among the kept ones.
func (s State) Result(run int) (Result, bool) {
	if s.Running != nil && s.Running.Run == run {
		return *s.Running, true
	}
	for _, r := range s.Results {
		if r.Run == run {
			return r, true
		}
	}
	return Result{}, false
}

// Witness describes the witness devices of one scenario.
type Witness struct {
	Devices  int
	Rate     float64       // readings per second across them
	Duration time.Duration // how long they publish
	Chaos    float64       // share of hostile messages, 0 to 1
	Reboots  float64       // chance of a reboot before each reading, 0 to 1
}

// Target is the pipeline the scenarios act on. `telemetry demo` implements
// it over its in-process pipeline.
type Target interface {
	// Check says why req cannot run on this pipeline (wrapping
	// ErrUnavailable), or nil. It must not block.
	Check(req Request) error
	// CutRegion severs region's link to the other regions; HealRegion
	// restores it.
	CutRegion(region string) error
	HealRegion(region string) error
	// CrashIngest stops region's ingest abruptly, without acknowledging
	// what it has in flight, and returns once it is gone. StartIngest
	// starts a fresh one.
	CrashIngest(ctx context.Context, region string) error
	StartIngest(ctx context.Context, region string) error
	// KillClickHouse kills the ClickHouse server; RestartClickHouse starts
	// it again on the same data and waits until it answers.
	KillClickHouse() error
	RestartClickHouse(ctx context.Context) error
	// StopStreamLeader stops the server leading region's READINGS, as a
	// crash would, and returns its name; StartServer starts it again.
	StopStreamLeader(region string) (server string, err error)
	StartServer(name string) error
	// Witness runs the witness devices, waits for the pipeline to drain
	// and returns their conservation ledger.
	Witness(ctx context.Context, w Witness) (Ledger, error)

	// Fleet reports what the pipeline's own devices (the demo's fleet)
	// have published so far, device by device and boot by boot, as
	// devices.Fleet.Sent does; ok is false when the pipeline runs no
	// devices of its own. It must not block.
	Fleet() (sent []devices.DeviceSent, ok bool)
	// Stored counts, for each range, its distinct readings in ClickHouse.
	Stored(ctx context.Context, ranges []ledger.Range) ([]uint64, error)
	// StoredSeqs lists, for each range, the seqs of its readings in
	// ClickHouse, ascending.
	StoredSeqs(ctx context.Context, ranges []ledger.Range) ([][]uint64, error)
	// Suppressed is how many duplicate readings JetStream suppressed, by
	// device, since each ingest started (ingest's
	// telemetry_ingest_duplicates_by_device_total); ok is false when
	// unknown.
	Suppressed() (byDevice map[string]uint64, ok bool)
}
