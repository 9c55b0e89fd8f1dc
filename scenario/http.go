package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/ledger"
)

// OffMessage is what the presenter API answers when the demo runs without
// a presenter token.
const OffMessage = "the presenter API is off: start the demo with --presenter-token TOKEN (or TELEMETRY_PRESENTER_TOKEN)"

// Handler serves the presenter API:
//
//	GET  /api/scenario          State: the scenarios, the one running, the event log, the last results
//	POST /api/scenario/{name}   start one; query parameters region, count and duration (e.g. 10s);
//	                            202 with {"run": n}, 409 while another runs
//
// Every request needs the header `Authorization: Bearer <token>`; without
// it the answer is 401. With no runner or an empty token the API is off and
// every request gets 404 saying how to turn it on.
func Handler(r *Runner, token string) http.Handler {
	if r == nil || token == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, OffMessage)
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/scenario", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.State())
	})
	mux.HandleFunc("POST /api/scenario/{name}", func(w http.ResponseWriter, req *http.Request) {
		sr, err := requestFromQuery(req.PathValue("name"), req.URL.Query())
		if err == nil {
			var run int
			run, err = r.Start(sr)
			if err == nil {
				writeJSON(w, http.StatusAccepted, map[string]any{"run": run, "request": sr})
				return
			}
		}
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrUnknown):
			status = http.StatusNotFound
		case errors.Is(err, ErrBadRequest):
			status = http.StatusBadRequest
		case errors.Is(err, ErrBusy), errors.Is(err, ErrUnavailable):
			status = http.StatusConflict
		}
		writeError(w, status, err.Error())
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !httpserv.HasBearer(req, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="telemetry presenter"`)
			writeError(w, http.StatusUnauthorized, "the presenter API needs the header Authorization: Bearer <the demo's --presenter-token>")
			return
		}
		mux.ServeHTTP(w, req)
	})
}

func requestFromQuery(name string, q url.Values) (Request, error) {
	req := Request{Name: name, Region: q.Get("region")}
	if c := q.Get("count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil {
			return req, fmt.Errorf("%w: count %q is not a number", ErrBadRequest, c)
		}
		req.Count = n
	}
	if d := q.Get("duration"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			return req, fmt.Errorf("%w: duration %q: want e.g. 10s", ErrBadRequest, d)
		}
		req.Window = v
	}
	return req, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the client may be gone; nothing to do then
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// Client calls the presenter API of a running demo.
type Client struct {
	// URL is the demo's dashboard address, e.g. http://127.0.0.1:8080.
	URL   string
	Token string
	// HTTP is the client to use; nil means one with a 10 s timeout.
	HTTP *http.Client
}

func (c Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	httpserv.SetBearer(req, c.Token)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the demo running there? see --demo-url)", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// APIError is a refusal of the presenter API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("presenter API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Start asks the demo to run req and returns its run number.
func (c Client) Start(ctx context.Context, req Request) (int, error) {
	q := url.Values{}
	if req.Region != "" {
		q.Set("region", req.Region)
	}
	if req.Count != 0 {
		q.Set("count", strconv.Itoa(req.Count))
	}
	if req.Window != 0 {
		q.Set("duration", req.Window.String())
	}
	path := "/api/scenario/" + url.PathEscape(req.Name)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Run int `json:"run"`
	}
	if err := c.do(ctx, http.MethodPost, path, &out); err != nil {
		return 0, err
	}
	return out.Run, nil
}

// State reads the presenter API's state.
func (c Client) State(ctx context.Context) (State, error) {
	var s State
	err := c.do(ctx, http.MethodGet, "/api/scenario", &s)
	return s, err
}

// Wait polls until run has ended and returns its result, handing each new
// event of the run to onEvent (if set) as it appears. A few failed polls in
// a row (the demo is busy) are tolerated; more end the wait.
func (c Client) Wait(ctx context.Context, run int, every time.Duration, onEvent func(Event)) (Result, error) {
	seen, failures := 0, 0
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s, err := c.State(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return Result{}, ctx.Err()
		case err != nil:
			var apiErr *APIError
			if failures++; failures >= 5 || errors.As(err, &apiErr) {
				return Result{}, err
			}
		default:
			failures = 0
			var mine []Event
			for _, e := range s.Events {
				if e.Run == run {
					mine = append(mine, e)
				}
			}
			for ; seen < len(mine); seen++ {
				if onEvent != nil {
					onEvent(mine[seen])
				}
			}
			res, ok := s.Result(run)
			if !ok {
				return Result{}, fmt.Errorf("run %d is not known to the demo (was it restarted?)", run)
			}
			if res.Done() {
				return res, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

// WriteResult prints res with its ledger, for a console or a terminal on a
// projector.
func WriteResult(w io.Writer, res Result) {
	var b strings.Builder
	verdict := "OK: nothing lost"
	if !res.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "scenario %s (run %d, %.1f s): %s\n", res.Request, res.Run, res.End.Sub(res.Start).Seconds(), verdict)
	if res.Error != "" {
		fmt.Fprintf(&b, "  error              %s\n", res.Error)
	}
	if l := res.Ledger; l != nil {
		if f := l.Fleet; f != nil {
			fmt.Fprintf(&b, "  demo devices       %d, every reading of the window (%d boots): %s\n", f.Devices, f.Boots, f)
		}
		if w := l.Witnesses; w != nil {
			fmt.Fprintf(&b, "  witness devices    %d (ids scn-*, boots from %d): %s\n", w.Devices, l.Boot, w)
		}
		if l.Reboots > 0 {
			fmt.Fprintf(&b, "  reboots            %d (%d boots counted)\n", l.Reboots, l.Boots)
		}
		fmt.Fprintf(&b, "  sent               %d readings\n", l.Sent)
		fmt.Fprintf(&b, "  acknowledged       %d by the broker (the pipeline owes every one)\n", l.Acked)
		fmt.Fprintf(&b, "  stored             %d distinct in ClickHouse (drained in %.1f s)\n", l.Stored, l.DrainSecs)
		fmt.Fprintf(&b, "  quarantined        %d dead letters", l.Quarantined)
		if l.HostileSent > 0 {
			fmt.Fprintf(&b, " of %d hostile messages sent", l.HostileSent)
		}
		b.WriteString("\n")
		reasons := make([]string, 0, len(l.QuarantinedBy))
		for r := range l.QuarantinedBy {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(&b, "    %-16s %d\n", r, l.QuarantinedBy[r])
		}
		if l.Misclassified > 0 || l.HostileMissing > 0 {
			fmt.Fprintf(&b, "  MISCLASSIFIED      %d under another reason, %d not quarantined\n", l.Misclassified, l.HostileMissing)
		}
		if l.Resent > 0 || l.Duplicates != nil {
			fmt.Fprintf(&b, "  duplicates         %d resent by devices", l.Resent)
			if l.Duplicates != nil {
				fmt.Fprintf(&b, "; %d suppressed by JetStream", *l.Duplicates)
			}
			b.WriteString("\n")
			devs := ledger.Top(l.DuplicatesByDevice, -1)
			for i, d := range devs {
				if i == 10 {
					fmt.Fprintf(&b, "    ... %d more devices (see the JSON)\n", len(devs)-10)
					break
				}
				fmt.Fprintf(&b, "    %-16s %d suppressed\n", d, l.DuplicatesByDevice[d])
			}
		}
		if l.Unconfirmed > 0 {
			fmt.Fprintf(&b, "  unconfirmed        %d (sent without a PUBACK, not stored: not owed)\n", l.Unconfirmed)
		}
		fmt.Fprintf(&b, "  LOST               %d\n", l.Lost)
		for _, m := range l.Missing {
			fmt.Fprintf(&b, "    missing %s boot %d seq %d..%d\n", m.Device, m.Boot, m.From, m.To)
		}
		for _, p := range l.Problems {
			fmt.Fprintf(&b, "  PROBLEM: %s\n", p)
		}
	}
	io.WriteString(w, b.String())
}

// Usage is the help of `telemetry scenario`: the command, then every
// scenario with its arguments and what it does.
func Usage() string {
	var b strings.Builder
	b.WriteString(`telemetry scenario <name> [argument] [flags]

Run a failure scenario on a running demo (telemetry demo --presenter-token
TOKEN) and print its conservation ledger when the pipeline has drained:
sent, acknowledged, stored, quarantined, lost, over every reading the demo's
own devices published during the scenario (and, for hostile-burst and
reboot-storm, its witness devices'). Exits non-zero when anything was lost
(or a hostile message was not quarantined as it should).

Scenarios:
`)
	for _, s := range Specs() {
		fmt.Fprintf(&b, "  %s\n      %s\n", strings.TrimSpace(s.Name+" "+s.Args), s.Summary)
	}
	b.WriteString(`
The token is the demo's: --presenter-token, or TELEMETRY_PRESENTER_TOKEN.
In compose, scenarios are commands to type instead: see docs/PRESENTER.md.`)
	return b.String()
}

// Report starts req, writes each event to progress as it happens, then the
// result to out (as JSON with asJSON), and returns an error wrapping
// bench.ErrLost when readings were lost, bench.ErrMisclassified when a
// hostile message was not quarantined as it should: `telemetry scenario`.
func (c Client) Report(ctx context.Context, req Request, asJSON bool, out, progress io.Writer) error {
	run, err := c.Start(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "scenario %s: run %d started on %s; the ledger follows once the pipeline has drained\n", req, run, c.URL)
	res, err := c.Wait(ctx, run, 500*time.Millisecond, func(e Event) {
		fmt.Fprintf(progress, "  %s  %-5s %s\n", e.Time.Local().Format("15:04:05"), e.Kind, e.Text)
	})
	if err != nil {
		return fmt.Errorf("waiting for run %d: %w", run, err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		WriteResult(out, res)
	}
	switch {
	case res.Ledger != nil && res.Ledger.Lost > 0:
		return fmt.Errorf("%w: %d acknowledged readings are not in ClickHouse", bench.ErrLost, res.Ledger.Lost)
	case res.Error != "":
		return errors.New(res.Error)
	case !res.OK:
		return fmt.Errorf("%w: %v", bench.ErrMisclassified, res.Ledger.Problems)
	}
	return nil
}
