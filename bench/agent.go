package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/ledger"
)

// A run's fleet can be split over several processes, one per machine in
// real use: each runs `telemetry bench --agent` and waits; one coordinator
// (`telemetry bench --agents URL,...`) gives each a disjoint range of the
// fleet's devices (devices.Config.FirstDevice) and one start time, watches
// the pipeline itself (JetStream, DEADLETTER, ClickHouse), and merges what
// the agents report (their devices' ledgers and their PUBACK histograms)
// into one report, as if one process had run the whole fleet.

// Bounds of the agent protocol.
const (
	// MinAgentToken is the shortest token an agent accepts: it starts load
	// on anyone's request who has it.
	MinAgentToken = 16
	// maxAgentRequest bounds the body of a run request.
	maxAgentRequest = 64 << 10
	// maxAgentStartDelay bounds how far ahead a run may be asked to start.
	maxAgentStartDelay = time.Minute
	// agentStartLead is how far ahead the coordinator sets the start, so
	// that every agent has the request before it.
	agentStartLead = 2 * time.Second
	// maxAgentResult bounds an agent's answer (a ledger line per device).
	maxAgentResult = 256 << 20
	// agentResultMargin is how long after its part's end an agent may
	// take to answer: connecting its devices and draining them.
	agentResultMargin = 5 * time.Minute
)

// AgentPart is a run request: an agent's range of the fleet and when to
// start. Broker and fleet secret are the agent's own (its flags); Broker
// here is the coordinator's, used when the agent was given none.
type AgentPart struct {
	Broker      string        `json:"broker"`
	FirstDevice int           `json:"first_device"`
	Devices     int           `json:"devices"`
	Rate        float64       `json:"rate"`
	Duration    time.Duration `json:"duration"`
	RampUp      time.Duration `json:"ramp_up"`
	QoS         byte          `json:"qos"`
	Seed        int64         `json:"seed"`
	MaxInflight int           `json:"max_inflight"`
	MaxBacklog  int           `json:"max_backlog"`
	Boot        uint64        `json:"boot"`
	IDPrefix    string        `json:"id_prefix"`
	Regions     []string      `json:"regions"`
	Types       []string      `json:"types"`
	Reboots     float64       `json:"reboots"`
	Duplicates  float64       `json:"duplicates"`
	Reorder     float64       `json:"reorder"`
	ClockSkew   time.Duration `json:"clock_skew"`
	Chaos       float64       `json:"chaos"`
	Batch       int           `json:"batch"`
	BatchWait   time.Duration `json:"batch_wait"`
	Gateway     int           `json:"gateway"`
	StartAt     time.Time     `json:"start_at"`
}

// AgentResult is an agent's answer once its part has run: what a
// devices.Fleet tells of itself, and its PUBACK latencies as a histogram
// log (Hops.WriteLog).
type AgentResult struct {
	Stats        devices.Stats           `json:"stats"`
	Sent         []devices.DeviceSent    `json:"sent"`
	Hostile      []devices.DeviceHostile `json:"hostile"`
	PublishStart time.Time               `json:"publish_start"`
	AckCount     uint64                  `json:"ack_count"`
	AckNegative  uint64                  `json:"ack_negative"`
	AckLog       []byte                  `json:"ack_log"`
	Error        string                  `json:"error,omitempty"`
}

// AgentReport is one agent's share of a run with agents.
type AgentReport struct {
	URL         string `json:"url"`
	FirstDevice int    `json:"first_device"`
	Devices     int    `json:"devices"`
	// Counts are the agent's devices' readings: sent and acknowledged as
	// the agent reports them, stored, lost and unconfirmed as the
	// coordinator found them in ClickHouse.
	ledger.Counts

	devices []string // the agent's devices' ids
}

// splitFleet divides fc's devices over n agents, in ranges as even as
// they go (the first ones take the remainder) in whole units of
// fc.SplitUnit (with gateways, whole blocks of them), each with its share
// of the rate, so that every device keeps the whole fleet's interval.
func splitFleet(fc devices.Config, n int, startAt time.Time) ([]AgentPart, error) {
	unit := fc.SplitUnit()
	units := (fc.Devices + unit - 1) / unit
	if units < n {
		return nil, fmt.Errorf("%d devices in blocks of %d (--gateway) cannot be split over %d agents: want more devices or fewer agents", fc.Devices, unit, n)
	}
	parts := make([]AgentPart, 0, n)
	first := 0
	for i := range n {
		k := units / n
		if i < units%n {
			k++
		}
		size := min(k*unit, fc.Devices-first)
		parts = append(parts, AgentPart{
			Broker: fc.Broker, FirstDevice: first, Devices: size,
			Rate:     fc.Rate * float64(size) / float64(fc.Devices),
			Duration: fc.Duration, RampUp: fc.RampUp, QoS: fc.QoS, Seed: fc.Seed,
			MaxInflight: fc.MaxInflight, MaxBacklog: fc.MaxBacklog, Boot: fc.Boot, IDPrefix: fc.IDPrefix,
			Regions: fc.Regions, Types: fc.Types, Reboots: fc.Reboots, Duplicates: fc.Duplicates,
			Reorder: fc.Reorder, ClockSkew: fc.ClockSkew, Chaos: fc.Chaos, Batch: fc.Batch, BatchWait: fc.BatchWait,
			Gateway: fc.Gateway, StartAt: startAt,
		})
		first += size
	}
	return parts, nil
}

// fleetConfig is own (the agent's broker, secret and connection settings)
// with p's share of the fleet.
func (p AgentPart) fleetConfig(own devices.Config) devices.Config {
	c := own
	if c.Broker == "" {
		c.Broker = p.Broker
	}
	c.FirstDevice, c.Devices, c.Rate, c.Duration, c.RampUp = p.FirstDevice, p.Devices, p.Rate, p.Duration, p.RampUp
	c.QoS, c.Seed, c.MaxInflight, c.MaxBacklog, c.Boot, c.IDPrefix = p.QoS, p.Seed, p.MaxInflight, p.MaxBacklog, p.Boot, p.IDPrefix
	c.Regions, c.Types, c.Reboots, c.Duplicates, c.Reorder = p.Regions, p.Types, p.Reboots, p.Duplicates, p.Reorder
	c.ClockSkew, c.Chaos, c.Batch, c.BatchWait, c.Gateway = p.ClockSkew, p.Chaos, p.Batch, p.BatchWait, p.Gateway
	return c
}

// Agent runs parts of a fleet on a coordinator's request, one at a time.
type Agent struct {
	own     devices.Config
	token   string
	log     *slog.Logger
	busy    sync.Mutex
	running atomic.Pointer[devices.Fleet] // the part running now, for GET /progress
}

// NewAgent returns an agent whose devices log in to own.Broker (empty:
// the coordinator's) with own.FleetSecret, and that runs a part only for a
// request that carries token.
func NewAgent(own devices.Config, token string, log *slog.Logger) (*Agent, error) {
	if len(token) < MinAgentToken {
		return nil, fmt.Errorf("bench agent: a token of at least %d bytes is required (--agent-token): whoever has it can start load from this machine", MinAgentToken)
	}
	return &Agent{own: own, token: token, log: log.With("component", "bench-agent")}, nil
}

// ServeHTTP answers POST /run: it runs the part the body asks for and
// answers with its AgentResult once the part has run; and GET /progress:
// the devices.Stats of the part running now (204 when none runs).
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != "/run" && r.URL.Path != "/progress":
		http.NotFound(w, r)
		return
	case !httpserv.HasBearer(r, a.token):
		http.Error(w, "the agent's token is required", http.StatusUnauthorized)
		return
	case r.URL.Path == "/progress" && r.Method == http.MethodGet:
		f := a.running.Load()
		if f == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.Stats())
		return
	case r.URL.Path != "/run" || r.Method != http.MethodPost:
		http.Error(w, "POST /run, GET /progress", http.StatusMethodNotAllowed)
		return
	}
	var p AgentPart
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAgentRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		http.Error(w, "run request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if d := time.Until(p.StartAt); d > maxAgentStartDelay {
		http.Error(w, fmt.Sprintf("run request: starts in %v, more than %v ahead", d.Round(time.Second), maxAgentStartDelay), http.StatusBadRequest)
		return
	}
	cfg := p.fleetConfig(a.own)
	if err := cfg.Validate(); err != nil {
		http.Error(w, "run request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !a.busy.TryLock() {
		http.Error(w, "this agent is running another part", http.StatusConflict)
		return
	}
	defer a.busy.Unlock()
	// The answer comes when the part has run, later than the server's
	// write timeout allows any other answer.
	_ = http.NewResponseController(w).SetWriteDeadline(p.StartAt.Add(cfg.Duration + cfg.RampUp + agentResultMargin))
	res := a.run(r.Context(), cfg, p.StartAt)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// run runs cfg's devices from startAt until they are done.
func (a *Agent) run(ctx context.Context, cfg devices.Config, startAt time.Time) AgentResult {
	a.log.Info("part of a run", "first_device", cfg.FirstDevice, "devices", cfg.Devices, "rate", cfg.Rate, "start_at", startAt)
	hops := NewHops(deviceInterval(cfg))
	cfg.AckLatency = func(d time.Duration) { hops.Record(HopAck, d) }
	fleet, err := devices.New(cfg, a.log)
	if err != nil {
		return AgentResult{Error: err.Error()}
	}
	defer fleet.Close()
	select {
	case <-time.After(time.Until(startAt)):
	case <-ctx.Done():
		return AgentResult{Error: "the coordinator went away before the start"}
	}
	res := AgentResult{}
	a.running.Store(fleet)
	defer a.running.Store(nil)
	if err := fleet.Run(ctx); err != nil {
		res.Error = fmt.Sprintf("running the fleet: %v", err)
	}
	res.Stats, res.Sent, res.Hostile, res.PublishStart = fleet.Stats(), fleet.Sent(), fleet.Hostile(), fleet.PublishStart()
	var buf bytes.Buffer
	if err := hops.WriteLog(&buf); err != nil {
		res.Error = err.Error()
	}
	res.AckLog = buf.Bytes()
	s := hops.Summary()[HopAck]
	res.AckCount, res.AckNegative = s.Count, s.Negative
	return res
}

// ServeAgent runs a as `telemetry bench --agent` on listen until ctx ends.
func ServeAgent(ctx context.Context, listen string, a *Agent, stderr io.Writer, log *slog.Logger) error {
	ln, err := httpserv.Listen(listen, httpserv.ServiceLimits, log)
	if err != nil {
		return fmt.Errorf("bench agent: %w", err)
	}
	fmt.Fprintf(stderr, "bench agent: waiting for a coordinator on http://%s (telemetry bench --agents)\n", ln.Addr())
	return httpserv.Serve(ctx, ln, a, log)
}

// deviceInterval is the time between two messages of one device: two
// readings with protocol v1, a batch's worth with v2 (--batch). It is the
// interval the histograms correct for coordinated omission with: at the
// reading interval, the wait of a batch's first readings for its last
// would count as a stall, and each of them would stand for readings that
// were in fact measured.
func deviceInterval(fc devices.Config) time.Duration {
	if fc.Devices == 0 || fc.Rate <= 0 {
		return 0
	}
	return time.Duration(float64(fc.Devices) / fc.Rate * float64(fc.ReadingsPerMessage()) * float64(time.Second))
}

// agentsRun is a run of the fleet by agents, merged: what account reads
// of a fleet. whole is the fleet built here but not run: its devices,
// configuration and chaos cases are the union of the parts'.
type agentsRun struct {
	whole   *devices.Fleet
	stats   devices.Stats
	sent    []devices.DeviceSent
	hostile []devices.DeviceHostile
	start   time.Time
}

func (r *agentsRun) Config() devices.Config            { return r.whole.Config() }
func (r *agentsRun) Stats() devices.Stats              { return r.stats }
func (r *agentsRun) Sent() []devices.DeviceSent        { return r.sent }
func (r *agentsRun) Hostile() []devices.DeviceHostile  { return r.hostile }
func (r *agentsRun) PublishStart() time.Time           { return r.start }
func (r *agentsRun) ChaosCase(index int, n uint64) int { return r.whole.ChaosCase(index, n) }

// runAgents runs whole's devices on the agents and merges their results;
// each agent's PUBACK histogram goes into hops, under HopAck merged and
// under its own HopAgentAck.
func runAgents(ctx context.Context, cfg Config, whole *devices.Fleet, hops *Hops, progress io.Writer) (*agentsRun, []AgentReport, error) {
	fc := whole.Config()
	parts, err := splitFleet(fc, len(cfg.Agents), time.Now().Add(agentStartLead))
	if err != nil {
		return nil, nil, err
	}
	results := make([]AgentResult, len(parts))
	fmt.Fprintf(progress, "bench: %d agents run the fleet from %s\n", len(parts), parts[0].StartAt.Format(time.RFC3339))
	client := &http.Client{Timeout: fc.Duration + fc.RampUp + agentStartLead + agentResultMargin}
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range parts {
		g.Go(func() error {
			res, err := askAgent(gctx, client, cfg.Agents[i], cfg.AgentToken, p)
			if err != nil {
				return fmt.Errorf("agent %d (%s): %w", i+1, redact.URL(cfg.Agents[i]), err)
			}
			results[i] = res
			return nil
		})
	}
	pctx, stopProgress := context.WithCancel(gctx)
	go agentsProgress(pctx, cfg.Agents, cfg.AgentToken, progress)
	err = g.Wait()
	stopProgress()
	if err != nil {
		return nil, nil, err
	}
	run := &agentsRun{whole: whole}
	reports := make([]AgentReport, len(parts))
	for i, res := range results {
		hs, err := MergeLogs(bytes.NewReader(res.AckLog))
		if err != nil {
			return nil, nil, fmt.Errorf("agent %d: %w", i+1, err)
		}
		if h := hs[HopAck]; h != nil {
			hops.add(HopAck, h, res.AckCount, res.AckNegative)
			hops.add(HopAgentAck(i), h, res.AckCount, res.AckNegative)
		}
		run.stats = addStats(run.stats, res.Stats)
		run.sent = append(run.sent, res.Sent...)
		run.hostile = append(run.hostile, res.Hostile...)
		if s := res.PublishStart; !s.IsZero() && (run.start.IsZero() || s.Before(run.start)) {
			run.start = s
		}
		reports[i] = AgentReport{URL: redact.URL(cfg.Agents[i]), FirstDevice: parts[i].FirstDevice, Devices: parts[i].Devices}
		reports[i].Sent, reports[i].Acked = res.Stats.Sent, res.Stats.Acked
		for _, d := range res.Sent { // a line per boot: once per device
			if !slices.Contains(reports[i].devices, d.Device) {
				reports[i].devices = append(reports[i].devices, d.Device)
			}
		}
		if res.Error != "" {
			return nil, nil, fmt.Errorf("agent %d (%s): %s", i+1, reports[i].URL, res.Error)
		}
	}
	return run, reports, nil
}

// askAgent posts p to the agent at base and waits for its result.
func askAgent(ctx context.Context, client *http.Client, base, token string, p AgentPart) (AgentResult, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return AgentResult{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/run", bytes.NewReader(body))
	if err != nil {
		return AgentResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	httpserv.SetBearer(req, token)
	resp, err := client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && !ne.Timeout() {
			return AgentResult{}, fmt.Errorf("%w: %v (start it with telemetry bench --agent)", ErrNothingListens, err)
		}
		return AgentResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return AgentResult{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var res AgentResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAgentResult)).Decode(&res); err != nil {
		return AgentResult{}, fmt.Errorf("reading its result: %w", err)
	}
	return res, nil
}

// addStats adds the counts of b to a, as of one fleet.
func addStats(a, b devices.Stats) devices.Stats {
	a.Devices += b.Devices
	a.Connected += b.Connected
	a.TargetRate += b.TargetRate
	a.Elapsed = max(a.Elapsed, b.Elapsed)
	a.Sent += b.Sent
	a.Messages += b.Messages
	a.Batched += b.Batched
	a.Acked += b.Acked
	a.InFlight += b.InFlight
	a.Skipped += b.Skipped
	a.Errors += b.Errors
	a.Resent += b.Resent
	a.ConnectionsLost += b.ConnectionsLost
	a.Reboots += b.Reboots
	a.Duplicates += b.Duplicates
	a.Reordered += b.Reordered
	a.Hostile += b.Hostile
	a.HostileAcked += b.HostileAcked
	a.AckMax = max(a.AckMax, b.AckMax)
	return a
}

// HopAgentAck is the hop to the broker's PUBACK of agent i's devices
// alone (from 0), beside HopAck of the whole fleet, in a run with agents.
func HopAgentAck(i int) string { return fmt.Sprintf("%s-agent-%d", HopAck, i+1) }

// add merges h, which measured count readings (negative of them below 0),
// into hop's histogram.
func (hs *Hops) add(hop string, h *hdrhistogram.Histogram, count, negative uint64) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	now := time.Now()
	if hs.start.IsZero() {
		hs.start = now
	}
	hs.end = now
	hs.hist(hop).Merge(h)
	hs.count[hop] += count
	hs.negative[hop] += negative
}

// countAgents fills each agent's stored, lost and unconfirmed readings
// from the run's counts by device.
func countAgents(agents []AgentReport, byDevice map[string]ledger.Counts) {
	for i := range agents {
		for _, d := range agents[i].devices {
			c := byDevice[d]
			agents[i].Stored += c.Stored
			agents[i].Lost += c.Lost
			agents[i].Unconfirmed += c.Unconfirmed
		}
	}
}

// AgentFlags are `telemetry bench`'s flags for a run split over agents.
type AgentFlags struct {
	// Serve runs this process as an agent (--agent) on Listen.
	Serve  bool
	Listen string
	fs     *flag.FlagSet
}

// Register adds the agent flags to fs: --agent, --agent-listen,
// --agent-token and --agents (into cfg).
func (a *AgentFlags) Register(fs *flag.FlagSet, cfg *Config) {
	a.fs = fs
	fs.BoolVar(&a.Serve, "agent", false, "run as an agent: wait for a coordinator (telemetry bench --agents) and run the part of the fleet it asks for, with this process's --broker (default: the coordinator's) and --fleet-secret")
	fs.StringVar(&a.Listen, "agent-listen", "127.0.0.1:9310", "with --agent: the address to wait on")
	cli.SecretVar(fs, &cfg.AgentToken, "agent-token", "", fmt.Sprintf("the agents' shared token (at least %d bytes): an agent runs a part only for a coordinator that has it", MinAgentToken))
	cli.ListVar(fs, &cfg.Agents, "agents", nil, "comma-separated URLs (http://host:9310) of agents that run the fleet, each a disjoint range of its devices, started together; this process watches the pipeline and merges their ledgers and histograms")
}

// Run serves as an agent, with own (the fleet flags) for its devices' logins.
func (a *AgentFlags) Run(ctx context.Context, own devices.Config, token string, stderr io.Writer, log *slog.Logger) error {
	brokerSet := false
	a.fs.Visit(func(f *flag.Flag) { brokerSet = brokerSet || f.Name == "broker" })
	if !brokerSet {
		own.Broker = ""
	}
	agent, err := NewAgent(own, token, log)
	if err != nil {
		return err
	}
	return ServeAgent(ctx, a.Listen, agent, stderr, log)
}

// agentsProgress prints, every second until ctx ends, the agents' fleet as
// one: what they answer on GET /progress, added up.
func agentsProgress(ctx context.Context, agents []string, token string, w io.Writer) {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prev devices.Stats
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var cur devices.Stats
		answered := 0
		for _, base := range agents {
			if st, ok := agentProgress(ctx, client, base, token); ok {
				cur = addStats(cur, st)
				answered++
			}
		}
		now := time.Now()
		secs := now.Sub(prevAt).Seconds()
		fmt.Fprintf(w, "agents %d/%d running  devices %d/%d connected  sent %.0f/s  acked %.0f/s  in flight %d  skipped %d  errors %d  connections lost %d\n",
			answered, len(agents), cur.Connected, cur.Devices,
			float64(cur.Sent+cur.Hostile-prev.Sent-prev.Hostile)/secs, float64(cur.Acked+cur.HostileAcked-prev.Acked-prev.HostileAcked)/secs,
			cur.InFlight, cur.Skipped, cur.Errors, cur.ConnectionsLost)
		prev, prevAt = cur, now
	}
}

// agentProgress asks one agent for the stats of the part it runs.
func agentProgress(ctx context.Context, client *http.Client, base, token string) (devices.Stats, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/progress", nil)
	if err != nil {
		return devices.Stats{}, false
	}
	httpserv.SetBearer(req, token)
	resp, err := client.Do(req)
	if err != nil {
		return devices.Stats{}, false
	}
	defer resp.Body.Close()
	var st devices.Stats
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil {
		return devices.Stats{}, false
	}
	return st, true
}
