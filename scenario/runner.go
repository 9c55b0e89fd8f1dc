package scenario

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/ledger"
)

// Defaults used for zero fields of Config.
const (
	DefaultWindow       = 10 * time.Second
	DefaultLead         = 2 * time.Second
	DefaultTail         = 2 * time.Second
	DefaultDevices      = 12
	DefaultRate         = 60
	DefaultHostileCount = 300
	DefaultStormDevices = 30
	DefaultMaxEvents    = 200
	DefaultMaxResults   = 20
	DefaultDrainTimeout = 60 * time.Second
)

// MaxWindow bounds a fault. While a region's ingest is down the broker
// holds its readings in the ingest's session, up to a quota (8,192 messages
// in the demo's broker); a minute stays well inside it at demo rates.
const MaxWindow = time.Minute

// Witness shapes of the scenarios that are not about devices.
const (
	// hostileShare is the share of hostile messages in a hostile burst:
	// half, so that valid readings keep flowing beside them.
	hostileShare = 0.5
	// stormReboots is a storming device's chance of rebooting before each
	// reading; at stormRate readings per second per device it reboots
	// about every two seconds.
	stormReboots = 0.25
	stormRate    = 2.0
)

// Config configures a Runner. Zero fields take the defaults above.
type Config struct {
	// Regions the pipeline has; cut-region and kill-ingest take one.
	Regions []string
	// Window is how long a fault lasts unless a request says otherwise;
	// at most MaxWindow.
	Window time.Duration
	// Lead is how long the scenario's window runs before the fault, Tail
	// how long after the recovery: the ledger counts what the pipeline's
	// own devices publish over the whole window.
	Lead, Tail time.Duration
	// Devices are the witness devices of hostile-burst (whose hostile
	// messages they carry). On a pipeline without devices of its own
	// (Target.Fleet), Devices witnesses at Rate readings per second in
	// all stand in for them in cut-region, kill-ingest and
	// clickhouse-outage.
	Devices int
	Rate    float64
	// DrainTimeout is how long the ledger waits for the pipeline to drain
	// while nothing moves: no reading newly stored or acknowledged.
	DrainTimeout time.Duration
	// MaxEvents and MaxResults bound the event log and the kept results.
	// Policy when full: drop the oldest.
	MaxEvents  int
	MaxResults int
	// OnEvent, if set, is called with every event as it is recorded (the
	// demo prints them on its console). It must not block.
	OnEvent func(Event)
	// OnResult, if set, is called with every finished run. It must not
	// block.
	OnResult func(Result)

	// poll is how often the drain asks ClickHouse; 0: drainPoll. Tests
	// shorten it.
	poll time.Duration
}

func (c Config) withDefaults() Config {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Lead == 0 {
		c.Lead = DefaultLead
	}
	if c.Tail == 0 {
		c.Tail = DefaultTail
	}
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxResults == 0 {
		c.MaxResults = DefaultMaxResults
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// Validate checks the configuration without any I/O.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Regions) == 0 {
		errs = append(errs, errors.New("no regions"))
	}
	if c.Window < 0 || c.Window > MaxWindow {
		errs = append(errs, fmt.Errorf("window %v: want up to %v", c.Window, MaxWindow))
	}
	if c.Lead < 0 || c.Tail < 0 || c.DrainTimeout < 0 {
		errs = append(errs, errors.New("lead, tail and drain timeout must not be negative"))
	}
	if c.Devices < len(c.Regions) {
		errs = append(errs, fmt.Errorf("devices %d: want at least one per region (%d)", c.Devices, len(c.Regions)))
	}
	if !(c.Rate > 0) {
		errs = append(errs, fmt.Errorf("rate %v: want a positive number of readings per second", c.Rate))
	}
	if c.MaxEvents < 1 || c.MaxResults < 1 {
		errs = append(errs, errors.New("max events and max results must be at least 1"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("scenario config: %w", errors.Join(errs...))
	}
	return nil
}

// Runner runs one scenario at a time against a Target and keeps the event
// log and the last results.
type Runner struct {
	cfg    Config
	target Target
	log    *slog.Logger
	queue  chan Result // capacity 1; only Start sends, and only when idle

	mu      sync.Mutex
	nextRun int
	running *Result
	events  []Event
	results []Result
	changed chan struct{} // closed and replaced whenever a run ends
	closed  bool
}

// New checks cfg and prepares a runner; Run executes what Start asks.
func New(cfg Config, target Target, log *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if target == nil {
		return nil, errors.New("scenario: no target")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		cfg: cfg.withDefaults(), target: target, log: log.With("component", "scenario"),
		queue: make(chan Result, 1), nextRun: 1, changed: make(chan struct{}),
	}, nil
}

// Check validates req against the configuration and the target without
// starting it; it fills in the defaults.
func (r *Runner) Check(req Request) (Request, error) {
	spec, ok := lookup(req.Name)
	if !ok {
		return req, fmt.Errorf("%w %q", ErrUnknown, req.Name)
	}
	if req.Window == 0 {
		req.Window = r.cfg.Window
	}
	if req.Window < 0 || req.Window > MaxWindow {
		return req, fmt.Errorf("%w: window %v: want up to %v", ErrBadRequest, req.Window, MaxWindow)
	}
	switch spec.Args {
	case "<region>":
		if !slices.Contains(r.cfg.Regions, req.Region) {
			return req, fmt.Errorf("%w: %s needs one of the regions %v, not %q", ErrBadRequest, req.Name, r.cfg.Regions, req.Region)
		}
	default:
		if req.Region != "" {
			return req, fmt.Errorf("%w: %s takes no region", ErrBadRequest, req.Name)
		}
	}
	if req.Count < 0 || req.Count > 0 && spec.Args == "" || spec.Args == "<region>" && req.Count != 0 {
		return req, fmt.Errorf("%w: %s takes no count %d", ErrBadRequest, req.Name, req.Count)
	}
	switch req.Name {
	case HostileBurst:
		if req.Count == 0 {
			req.Count = DefaultHostileCount
		}
		if req.Count > 20_000 {
			return req, fmt.Errorf("%w: hostile-burst count %d: at most 20000", ErrBadRequest, req.Count)
		}
	case RebootStorm:
		if req.Count == 0 {
			req.Count = DefaultStormDevices
		}
		if req.Count < len(r.cfg.Regions) || req.Count > 10_000 {
			return req, fmt.Errorf("%w: reboot-storm devices %d: want %d to 10000", ErrBadRequest, req.Count, len(r.cfg.Regions))
		}
	}
	if err := r.target.Check(req); err != nil {
		return req, err
	}
	return req, nil
}

// Start checks req and, if no scenario is running, queues it for Run and
// returns its run number. It does not wait for the scenario.
func (r *Runner) Start(req Request) (int, error) {
	req, err := r.Check(req)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return 0, fmt.Errorf("%w: the demo is stopping", ErrUnavailable)
	case r.running != nil:
		return 0, fmt.Errorf("%w (run %d, %s)", ErrBusy, r.running.Run, r.running.Request)
	}
	res := Result{Run: r.nextRun, Request: req, Start: time.Now()}
	r.nextRun++
	r.running = &res
	r.queue <- res // never blocks: the queue is empty while nothing runs
	return res.Run, nil
}

// Run executes the scenarios Start queues, one at a time, until ctx is
// cancelled. A scenario interrupted by ctx restores what it broke when it
// still can (a cut link is healed) and ends with an error.
func (r *Runner) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			r.closed = true
			r.mu.Unlock()
			return nil
		case res := <-r.queue:
			r.execute(ctx, res)
		}
	}
}

// Close stops Start from queueing scenarios. It may be called more than
// once.
func (r *Runner) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

// State returns the scenarios, the one running, the event log and the last
// results.
func (r *Runner) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := State{Scenarios: Specs(), Events: slices.Clone(r.events), Results: slices.Clone(r.results)}
	if r.running != nil {
		cp := *r.running
		s.Running = &cp
	}
	if s.Events == nil {
		s.Events = []Event{}
	}
	if s.Results == nil {
		s.Results = []Result{}
	}
	return s
}

// Events returns the event log, oldest first.
func (r *Runner) Events() []Event { return r.State().Events }

// Wait waits for run to end and returns its result.
func (r *Runner) Wait(ctx context.Context, run int) (Result, error) {
	for {
		r.mu.Lock()
		changed := r.changed
		for _, res := range r.results {
			if res.Run == run {
				r.mu.Unlock()
				return res, nil
			}
		}
		known := run < r.nextRun
		r.mu.Unlock()
		if !known {
			return Result{}, fmt.Errorf("scenario run %d was never started", run)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

func (r *Runner) record(run int, name, kind, text string) {
	e := Event{Time: time.Now(), Run: run, Scenario: name, Kind: kind, Text: text}
	r.mu.Lock()
	r.events = append(r.events, e)
	if n := len(r.events) - r.cfg.MaxEvents; n > 0 {
		r.events = slices.Delete(r.events, 0, n)
	}
	r.mu.Unlock()
	r.log.Info("scenario "+kind, "run", run, "scenario", name, "text", text)
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(e)
	}
}

func (r *Runner) finish(res Result) {
	res.End = time.Now()
	res.OK = res.Error == "" && res.Ledger != nil && res.Ledger.OK
	r.mu.Lock()
	r.running = nil
	r.results = append(r.results, res)
	if n := len(r.results) - r.cfg.MaxResults; n > 0 {
		r.results = slices.Delete(r.results, 0, n)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.cfg.OnResult != nil {
		r.cfg.OnResult(res)
	}
}

// execute runs one scenario: the fault is applied and removed while the
// pipeline's own devices (and the witnesses, when the scenario has some)
// publish, then the ledger is read once the pipeline has drained.
func (r *Runner) execute(ctx context.Context, res Result) {
	req := res.Request
	step := func(text string) { r.record(res.Run, req.Name, EventStep, text) }
	r.record(res.Run, req.Name, EventStart, describe(req))
	start, haveFleet := r.target.Fleet()
	dupsBefore, _ := r.target.Suppressed()

	type ledgerOrErr struct {
		l   Ledger
		err error
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var done chan ledgerOrErr
	if needsWitnesses(req, haveFleet) {
		done = make(chan ledgerOrErr, 1)
		w := r.witness(req)
		go func() {
			l, err := r.target.Witness(wctx, w)
			done <- ledgerOrErr{l, err}
		}()
	}

	var errs []error
	faultErr := r.fault(ctx, req, step)
	if faultErr != nil {
		step("failed: " + faultErr.Error())
		errs = append(errs, faultErr)
	} else if isFault(req.Name) {
		step("recovered; waiting for the pipeline to drain")
	}
	var fleet *fleetCount
	if haveFleet {
		if faultErr == nil && isFault(req.Name) {
			// The window runs on for Tail: readings published while the
			// pipeline catches up are counted too.
			pause(ctx, r.cfg.Tail) // interrupted: the count says so
		}
		end, _ := r.target.Fleet()
		fc, err := r.countFleet(ctx, start, end)
		if err != nil {
			errs = append(errs, fmt.Errorf("counting the demo's devices: %w", err))
		} else {
			fleet = &fc
		}
	}
	var witnesses *Ledger
	if done != nil {
		out := <-done
		if out.err != nil {
			errs = append(errs, fmt.Errorf("counting the witnesses: %w", out.err))
		} else {
			witnesses = &out.l
		}
	}
	if fleet != nil || witnesses != nil {
		l := combine(fleet, witnesses)
		if fleet != nil && witnesses == nil {
			if after, ok := r.target.Suppressed(); ok {
				l.DuplicatesByDevice = ledger.Gained(after, dupsBefore)
				var sum uint64
				for _, n := range l.DuplicatesByDevice {
					sum += n
				}
				l.Duplicates = &sum
			}
		}
		res.Ledger = &l
	}
	if err := errors.Join(errs...); err != nil {
		res.Error = err.Error()
	}
	r.record(res.Run, req.Name, EventEnd, summarize(res))
	r.finish(res)
}

// isFault reports whether the scenario breaks a part of the pipeline and
// mends it, rather than sending devices of its own.
func isFault(name string) bool {
	return name == CutRegion || name == KillIngest || name == ClickHouseOutage || name == StopLeader
}

// needsWitnesses reports whether req runs witness devices. Hostile-burst
// and reboot-storm are about devices: the hostile messages and the reboots
// are the witnesses' (the demo's fleet sends neither). A fault scenario
// needs them only on a pipeline without devices of its own to count.
func needsWitnesses(req Request, haveFleet bool) bool {
	return !isFault(req.Name) || !haveFleet
}

// combine is the scenario's ledger: the fleet's count and the witnesses'
// ledger, either of which may be nil.
func combine(fleet *fleetCount, witnesses *Ledger) Ledger {
	l := Ledger{QuarantinedBy: map[string]uint64{}, Missing: []ledger.Range{}, Problems: []string{}, OK: true}
	if w := witnesses; w != nil {
		l = *w
		l.Missing = append([]ledger.Range{}, w.Missing...)
		l.Problems = append([]string{}, w.Problems...)
		if l.QuarantinedBy == nil {
			l.QuarantinedBy = map[string]uint64{}
		}
		l.Witnesses = &Tally{Devices: w.Devices, Boots: w.Boots, Counts: w.Counts}
		l.Fleet = nil
	}
	if f := fleet; f != nil {
		t := f.Tally
		l.Fleet = &t
		l.Devices += t.Devices
		l.Boots += t.Boots
		l.Reboots += f.reboots
		l.Counts.Add(t.Counts)
		l.DrainSecs = max(l.DrainSecs, f.drain.Seconds())
		for _, m := range f.missing {
			if len(l.Missing) == ledger.MaxMissing {
				break
			}
			l.Missing = append(l.Missing, m)
		}
		if t.Lost > 0 {
			l.Problems = append(l.Problems, fmt.Sprintf("%d acknowledged readings of the demo's devices are not in ClickHouse", t.Lost))
			l.OK = false
		}
	}
	return l
}

// pause waits for d or until ctx is done.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
}

// witness shapes the witness devices of req.
func (r *Runner) witness(req Request) Witness {
	w := Witness{Devices: r.cfg.Devices, Rate: r.cfg.Rate, Duration: r.cfg.Lead + req.Window + r.cfg.Tail}
	switch req.Name {
	case HostileBurst:
		// About Count hostile messages over the window, as many valid
		// readings beside them.
		w.Duration = req.Window
		w.Chaos = hostileShare
		w.Rate = float64(req.Count) / hostileShare / req.Window.Seconds()
	case RebootStorm:
		w.Duration = req.Window
		w.Devices = req.Count
		w.Rate = stormRate * float64(req.Count)
		w.Reboots = stormReboots
	}
	return w
}

// fault applies the fault of req after the lead, keeps it for the window
// and removes it. Removal happens even when applying it half failed.
// Hostile-burst and reboot-storm have no fault but their witnesses: it
// waits for the window they publish in.
func (r *Runner) fault(ctx context.Context, req Request, step func(string)) error {
	wait := func(d time.Duration) error { return pause(ctx, d) }
	switch req.Name {
	case HostileBurst, RebootStorm:
		// The witnesses are the fault; they publish for the window.
		return wait(req.Window)
	case CutRegion:
		if err := wait(r.cfg.Lead); err != nil {
			return err
		}
		if err := r.target.CutRegion(req.Region); err != nil {
			return fmt.Errorf("cutting %s off: %w", req.Region, err)
		}
		step(req.Region + " cut off from the other regions")
		werr := wait(req.Window)
		// Healed even when interrupted: a link left cut would outlive the
		// scenario.
		if err := r.target.HealRegion(req.Region); err != nil {
			return errors.Join(werr, fmt.Errorf("healing %s: %w", req.Region, err))
		}
		step(req.Region + " link healed")
		return werr
	case KillIngest:
		if err := wait(r.cfg.Lead); err != nil {
			return err
		}
		if err := r.target.CrashIngest(ctx, req.Region); err != nil {
			return fmt.Errorf("crashing ingest %s: %w", req.Region, err)
		}
		step("ingest " + req.Region + " crashed: its readings wait in the broker")
		if err := wait(req.Window); err != nil {
			return err
		}
		if err := r.target.StartIngest(ctx, req.Region); err != nil {
			return fmt.Errorf("starting ingest %s again: %w", req.Region, err)
		}
		step("ingest " + req.Region + " started again")
		return nil
	case StopLeader:
		if err := wait(r.cfg.Lead); err != nil {
			return err
		}
		name, err := r.target.StopStreamLeader(req.Region)
		if err != nil {
			return fmt.Errorf("stopping the leader of %s's readings: %w", req.Region, err)
		}
		step(name + ", the leader of " + req.Region + "'s readings, stopped: another server takes over")
		werr := wait(req.Window)
		// Started even when interrupted: a server left down would
		// outlive the scenario.
		if err := r.target.StartServer(name); err != nil {
			return errors.Join(werr, fmt.Errorf("starting %s again: %w", name, err))
		}
		step(name + " started again: it catches up")
		return werr
	case ClickHouseOutage:
		if err := wait(r.cfg.Lead); err != nil {
			return err
		}
		if err := r.target.KillClickHouse(); err != nil {
			return fmt.Errorf("killing ClickHouse: %w", err)
		}
		step("ClickHouse killed: readings wait in JetStream")
		if err := wait(req.Window); err != nil {
			return err
		}
		if err := r.target.RestartClickHouse(ctx); err != nil {
			return fmt.Errorf("restarting ClickHouse: %w", err)
		}
		step("ClickHouse up again")
		return nil
	}
	return nil
}

func describe(req Request) string {
	switch req.Name {
	case CutRegion:
		return fmt.Sprintf("cutting %s off for %v", req.Region, req.Window)
	case KillIngest:
		return fmt.Sprintf("crashing ingest %s for %v", req.Region, req.Window)
	case StopLeader:
		return fmt.Sprintf("stopping the leader of %s's readings for %v", req.Region, req.Window)
	case ClickHouseOutage:
		return fmt.Sprintf("ClickHouse outage of %v", req.Window)
	case HostileBurst:
		return fmt.Sprintf("about %d hostile messages over %v", req.Count, req.Window)
	case RebootStorm:
		return fmt.Sprintf("%d devices rebooting over %v", req.Count, req.Window)
	}
	return req.String()
}

// summarize is the end event's text: the ledger in one line.
func summarize(res Result) string {
	if res.Ledger == nil {
		return "FAILED: " + res.Error
	}
	l := res.Ledger
	s := fmt.Sprintf("sent %d, acknowledged %d, stored %d, quarantined %d, lost %d", l.Sent, l.Acked, l.Stored, l.Quarantined, l.Lost)
	if res.Error != "" {
		return s + "; FAILED: " + res.Error
	}
	if !l.OK {
		return s + "; PROBLEMS: " + fmt.Sprint(l.Problems)
	}
	return s
}
