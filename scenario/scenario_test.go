package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
)

// The scenarios on the real pipeline are tested in cmd/telemetry
// (TestEveryScenarioEndsWithNothingLost, TestCutRegionCountsTheWholeFleet).
// These tests cover the runner's bookkeeping and the presenter API against
// a target that records what it is asked to do.

type recordingTarget struct {
	mu       sync.Mutex
	calls    []string
	checkErr error
	// release, if set, holds Witness until closed.
	release chan struct{}
	// fleet, if set, is the pipeline's own devices; without it the
	// target has none.
	fleet *fakeFleet
	// suppressedCalls counts Suppressed: th-00001's duplicates grow by 3
	// at each call, th-00002's stay at 1.
	suppressedCalls uint64
}

func (t *recordingTarget) call(s string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, s)
	return nil
}

func (t *recordingTarget) Calls() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.calls)
}

func (t *recordingTarget) Check(Request) error       { return t.checkErr }
func (t *recordingTarget) CutRegion(r string) error  { return t.call("cut " + r) }
func (t *recordingTarget) HealRegion(r string) error { return t.call("heal " + r) }
func (t *recordingTarget) StopStreamLeader(r string) (string, error) {
	return r + "-2", t.call("stop the leader of " + r)
}
func (t *recordingTarget) StartServer(name string) error { return t.call("start " + name) }
func (t *recordingTarget) KillClickHouse() error         { return t.call("kill clickhouse") }
func (t *recordingTarget) RestartClickHouse(context.Context) error {
	return t.call("restart clickhouse")
}
func (t *recordingTarget) CrashIngest(_ context.Context, r string) error {
	return t.call("crash ingest " + r)
}
func (t *recordingTarget) StartIngest(_ context.Context, r string) error {
	return t.call("start ingest " + r)
}

func (t *recordingTarget) Witness(ctx context.Context, w Witness) (Ledger, error) {
	t.call(fmt.Sprintf("witness %d devices %.0f/s for %v chaos %v reboots %v", w.Devices, w.Rate, w.Duration, w.Chaos, w.Reboots))
	if t.release != nil {
		select {
		case <-t.release:
		case <-ctx.Done():
			return Ledger{}, ctx.Err()
		}
	}
	return Ledger{Devices: w.Devices, OK: true, Counts: ledger.Counts{Sent: 10, Acked: 10, Stored: 10}}, nil
}

func (t *recordingTarget) Fleet() ([]devices.DeviceSent, bool) {
	if t.fleet == nil {
		return nil, false
	}
	return t.fleet.sent(), true
}

func (t *recordingTarget) Stored(_ context.Context, ranges []ledger.Range) ([]uint64, error) {
	out := make([]uint64, len(ranges))
	for i, seqs := range t.fleet.stored(ranges) {
		out[i] = uint64(len(seqs))
	}
	return out, nil
}

func (t *recordingTarget) StoredSeqs(_ context.Context, ranges []ledger.Range) ([][]uint64, error) {
	return t.fleet.stored(ranges), nil
}

func (t *recordingTarget) Suppressed() (map[string]uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.suppressedCalls++
	return map[string]uint64{"th-00001": 3 * t.suppressedCalls, "th-00002": 1}, true
}

func newTestRunner(t *testing.T, target Target) *Runner {
	t.Helper()
	return newTestRunnerWith(t, target, Config{})
}

// newTestRunnerWith runs a runner with short windows and cfg's drain
// timeout and poll.
func newTestRunnerWith(t *testing.T, target Target, cfg Config) *Runner {
	t.Helper()
	r, err := New(Config{Regions: []string{"us-east", "eu-west"}, Window: 30 * time.Millisecond,
		Lead: 10 * time.Millisecond, Tail: 10 * time.Millisecond, Devices: 4, Rate: 40,
		DrainTimeout: cfg.DrainTimeout, poll: cfg.poll}, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func TestScenariosActOnTheTargetInOrder(t *testing.T) {
	const witness = "witness 4 devices 40/s for 50ms chaos 0 reboots 0"
	cases := []struct {
		req     Request
		witness string
		faults  []string
	}{
		{Request{Name: CutRegion, Region: "eu-west"}, witness, []string{"cut eu-west", "heal eu-west"}},
		{Request{Name: KillIngest, Region: "us-east"}, witness, []string{"crash ingest us-east", "start ingest us-east"}},
		{Request{Name: ClickHouseOutage}, witness, []string{"kill clickhouse", "restart clickhouse"}},
		{Request{Name: StopLeader, Region: "us-east"}, witness, []string{"stop the leader of us-east", "start us-east-2"}},
		{Request{Name: HostileBurst, Count: 30, Window: 300 * time.Millisecond}, "witness 4 devices 200/s for 300ms chaos 0.5 reboots 0", nil},
		{Request{Name: RebootStorm}, fmt.Sprintf("witness %d devices %d/s for 30ms chaos 0 reboots %v", DefaultStormDevices, 2*DefaultStormDevices, stormReboots), nil},
	}
	for _, c := range cases {
		t.Run(c.req.Name, func(t *testing.T) {
			target := &recordingTarget{}
			r := newTestRunner(t, target)
			res := runScenario(t, r, c.req)
			if !res.OK || res.Ledger == nil || res.Error != "" || !res.Done() {
				t.Errorf("result %+v", res)
			}
			// The witnesses run beside the fault, so their call may come
			// anywhere; the fault's calls come in order.
			var witnesses, faults []string
			for _, call := range target.Calls() {
				if strings.HasPrefix(call, "witness") {
					witnesses = append(witnesses, call)
				} else {
					faults = append(faults, call)
				}
			}
			if !slices.Equal(witnesses, []string{c.witness}) {
				t.Errorf("witnesses %q, want %q", witnesses, c.witness)
			}
			if !slices.Equal(faults, c.faults) {
				t.Errorf("fault calls %q, want %q", faults, c.faults)
			}
			ev := r.Events()
			if len(ev) < 2 || ev[0].Kind != EventStart || ev[len(ev)-1].Kind != EventEnd {
				t.Fatalf("events %+v: want a start first and an end last", ev)
			}
			for _, e := range ev {
				if e.Run != res.Run || e.Scenario != c.req.Name {
					t.Errorf("event %+v: not of run %d %s", e, res.Run, c.req.Name)
				}
			}
			if !strings.Contains(ev[len(ev)-1].Text, "lost 0") {
				t.Errorf("end event %q does not give the ledger", ev[len(ev)-1].Text)
			}
		})
	}
}

func TestOneScenarioAtATime(t *testing.T) {
	target := &recordingTarget{release: make(chan struct{})}
	r := newTestRunner(t, target)
	run, err := r.Start(Request{Name: HostileBurst})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(Request{Name: RebootStorm}); !errors.Is(err, ErrBusy) {
		t.Errorf("second Start: %v, want ErrBusy", err)
	}
	if s := r.State(); s.Running == nil || s.Running.Run != run {
		t.Errorf("running %+v, want run %d", s.Running, run)
	}
	close(target.release)
	if _, err := r.Wait(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(Request{Name: RebootStorm}); err != nil {
		t.Errorf("Start after the first ended: %v", err)
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	r := newTestRunner(t, &recordingTarget{})
	for _, c := range []struct {
		req  Request
		want error
	}{
		{Request{Name: "meteor-strike"}, ErrUnknown},
		{Request{Name: CutRegion}, ErrBadRequest},
		{Request{Name: CutRegion, Region: "mars"}, ErrBadRequest},
		{Request{Name: KillIngest, Region: "us-east", Count: 3}, ErrBadRequest},
		{Request{Name: ClickHouseOutage, Region: "us-east"}, ErrBadRequest},
		{Request{Name: ClickHouseOutage, Window: 2 * MaxWindow}, ErrBadRequest},
		{Request{Name: HostileBurst, Count: 1_000_000}, ErrBadRequest},
		{Request{Name: RebootStorm, Count: 1}, ErrBadRequest},
	} {
		if _, err := r.Start(c.req); !errors.Is(err, c.want) {
			t.Errorf("Start(%+v) = %v, want %v", c.req, err, c.want)
		}
	}
	unavailable := &recordingTarget{checkErr: fmt.Errorf("%w: storage is off", ErrUnavailable)}
	r = newTestRunner(t, unavailable)
	if _, err := r.Start(Request{Name: HostileBurst}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start on an unavailable target: %v", err)
	}
}

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want Request
		err  error
	}{
		{[]string{"cut-region", "eu-west"}, Request{Name: CutRegion, Region: "eu-west"}, nil},
		{[]string{"cut-region"}, Request{}, ErrBadRequest},
		{[]string{"hostile-burst"}, Request{Name: HostileBurst}, nil},
		{[]string{"hostile-burst", "500"}, Request{Name: HostileBurst, Count: 500}, nil},
		{[]string{"hostile-burst", "many"}, Request{}, ErrBadRequest},
		{[]string{"clickhouse-outage", "now"}, Request{}, ErrBadRequest},
		{[]string{"flood"}, Request{}, ErrUnknown},
	} {
		got, err := ParseArgs(c.args[0], c.args[1:])
		if !errors.Is(err, c.err) || err == nil && got != c.want {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v, %v", c.args, got, err, c.want, c.err)
		}
	}
}

func TestPresenterAPI(t *testing.T) {
	const token = "t0ken"
	target := &recordingTarget{release: make(chan struct{})}
	srv := httptest.NewServer(Handler(newTestRunner(t, target), token))
	defer srv.Close()
	off := httptest.NewServer(Handler(nil, ""))
	defer off.Close()
	status := func(base, method, path, auth string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bearer := "Bearer " + token
	for _, c := range []struct {
		base, method, path, auth string
		want                     int
	}{
		{srv.URL, "GET", "/api/scenario", "", http.StatusUnauthorized},
		{srv.URL, "POST", "/api/scenario/hostile-burst", "", http.StatusUnauthorized},
		{srv.URL, "GET", "/api/scenario", "Bearer nope", http.StatusUnauthorized},
		{srv.URL, "GET", "/api/scenario", token, http.StatusUnauthorized},
		{srv.URL, "GET", "/api/scenario", bearer, http.StatusOK},
		{srv.URL, "POST", "/api/scenario/flood", bearer, http.StatusNotFound},
		{srv.URL, "POST", "/api/scenario/cut-region?region=mars", bearer, http.StatusBadRequest},
		{srv.URL, "POST", "/api/scenario/cut-region?region=eu-west&duration=soon", bearer, http.StatusBadRequest},
		{srv.URL, "POST", "/api/scenario/hostile-burst?count=20&duration=1s", bearer, http.StatusAccepted},
		{srv.URL, "POST", "/api/scenario/reboot-storm", bearer, http.StatusConflict},
		{off.URL, "GET", "/api/scenario", bearer, http.StatusNotFound},
	} {
		if got := status(c.base, c.method, c.path, c.auth); got != c.want {
			t.Errorf("%s %s (%q) = %d, want %d", c.method, c.path, c.auth, got, c.want)
		}
	}

	// The client sees the run through to its ledger.
	close(target.release)
	c := Client{URL: srv.URL, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var kinds []string
	res, err := c.Wait(ctx, 1, 10*time.Millisecond, func(e Event) { kinds = append(kinds, e.Kind) })
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Ledger == nil || res.Ledger.Stored != 10 || res.Request.Count != 20 || res.Request.Window != time.Second {
		t.Errorf("result %+v", res)
	}
	if len(kinds) == 0 || kinds[0] != EventStart {
		t.Errorf("events seen %q, want a start first", kinds)
	}
	if _, err := (Client{URL: srv.URL, Token: "wrong"}).State(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("state with a wrong token: %v, want a 401", err)
	}
}
