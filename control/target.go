package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/scenario"
)

// Names of the relay's links a Target cuts, as compose.yaml names them.
func leafLink(region string) string   { return "leaf-" + region }
func ingestLink(region string) string { return "ingest-" + region }

// ClickHouseLink is the relay's link between storage and ClickHouse.
const ClickHouseLink = "clickhouse"

// WitnessPrefix tells the scenarios' witness devices from a fleet's own.
const WitnessPrefix = "scn-"

// requestTimeout bounds one request to the relay, through one region.
const requestTimeout = 3 * time.Second

// TargetConfig configures a Target.
type TargetConfig struct {
	Regions []string
	// NATS is each region's URL, as a user that may publish to
	// RelaySubject (the dashboard's): a request goes through any region
	// that answers, the one it is about last.
	NATS map[string]string
	// Token signs the requests (the presenter token).
	Token string
	// Witness is the witness devices' run without its fleet's shape:
	// broker, fleet secret, ClickHouse and NATS to read the ledger from.
	Witness bench.Config
}

// Target runs the scenarios on a pipeline of separate processes through
// the relay (scenario.Target). It has no fleet of its own to count: every
// scenario's ledger is its witnesses'.
type Target struct {
	cfg TargetConfig
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*nats.Conn
}

// NewTarget connects lazily, on the first request.
func NewTarget(cfg TargetConfig, log *slog.Logger) (*Target, error) {
	if cfg.Token == "" {
		return nil, errors.New("control target: a presenter token is required")
	}
	for _, r := range cfg.Regions {
		if cfg.NATS[r] == "" {
			return nil, fmt.Errorf("control target: no NATS URL for region %s", r)
		}
	}
	return &Target{cfg: cfg, log: log, conns: map[string]*nats.Conn{}}, nil
}

func (t *Target) Check(req scenario.Request) error {
	if req.Name == scenario.StopLeader {
		return fmt.Errorf("%w: %s stops a server of a region's NATS cluster, which the demo runs in-process (telemetry demo --nats-cluster 3); here, stop a container of compose.scale.yaml's clusters yourself", scenario.ErrUnavailable, req.Name)
	}
	return nil
}

// StopStreamLeader and StartServer are refused by Check.
func (t *Target) StopStreamLeader(string) (string, error) {
	return "", fmt.Errorf("%w: stop-leader runs on the demo only", scenario.ErrUnavailable)
}

func (t *Target) StartServer(string) error {
	return fmt.Errorf("%w: stop-leader runs on the demo only", scenario.ErrUnavailable)
}

func (t *Target) CutRegion(region string) error  { return t.ask(ActionCut, leafLink(region), region) }
func (t *Target) HealRegion(region string) error { return t.ask(ActionHeal, leafLink(region), region) }

// CrashIngest cuts ingest's connection to the broker: what it had in
// flight is never acknowledged, and the broker keeps it for the next
// connection. The process itself keeps running, its MQTT client failing
// to reconnect until StartIngest.
func (t *Target) CrashIngest(_ context.Context, region string) error {
	return t.ask(ActionCut, ingestLink(region), "")
}

func (t *Target) StartIngest(_ context.Context, region string) error {
	return t.ask(ActionHeal, ingestLink(region), "")
}

// KillClickHouse cuts storage off from ClickHouse: to storage, the server
// is gone. (The demo kills its own ClickHouse process instead.)
func (t *Target) KillClickHouse() error { return t.ask(ActionCut, ClickHouseLink, "") }

func (t *Target) RestartClickHouse(context.Context) error {
	return t.ask(ActionHeal, ClickHouseLink, "")
}

// ask sends a signed request to the relay through the first region that
// delivers it, avoid last (a region being cut may not reach the relay).
func (t *Target) ask(action, link, avoid string) error {
	order := slices.Clone(t.cfg.Regions)
	if i := slices.Index(order, avoid); i >= 0 {
		order = append(append(order[:i:i], order[i+1:]...), avoid)
	}
	var errs []error
	for _, region := range order {
		err := t.askThrough(region, Request{Action: action, Link: link, WindowMS: MaxWindow.Milliseconds()})
		if err == nil {
			return nil
		}
		var refused refusedError
		if errors.As(err, &refused) {
			return err
		}
		errs = append(errs, fmt.Errorf("through %s: %w", region, err))
	}
	return fmt.Errorf("relay: %s %s: %w", action, link, errors.Join(errs...))
}

// refusedError is the relay's answer refusing a request: no other region
// would get another answer.
type refusedError struct{ msg string }

func (e refusedError) Error() string { return "the relay refused: " + e.msg }

func (t *Target) askThrough(region string, req Request) error {
	nc, err := t.conn(region)
	if err != nil {
		return err
	}
	m, err := newMsg(t.cfg.Token, req, time.Now())
	if err != nil {
		return err
	}
	resp, err := nc.RequestMsg(m, requestTimeout)
	if err != nil {
		return err
	}
	var reply Reply
	if err := json.Unmarshal(resp.Data, &reply); err != nil {
		return fmt.Errorf("the relay's answer: %w", err)
	}
	if !reply.OK {
		return refusedError{reply.Error}
	}
	return nil
}

func (t *Target) conn(region string) (*nats.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if nc := t.conns[region]; nc != nil {
		return nc, nil
	}
	nc, err := nats.Connect(t.cfg.NATS[region], nats.Name("telemetry-scenarios"), nats.Timeout(requestTimeout), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	t.conns[region] = nc
	return nc, nil
}

// Witness runs the witness devices with the scenario's shape.
func (t *Target) Witness(ctx context.Context, w scenario.Witness) (scenario.Ledger, error) {
	return RunWitness(ctx, t.cfg.Witness, w, t.log)
}

func (t *Target) Fleet() ([]devices.DeviceSent, bool) { return nil, false }

var errNoFleet = errors.New("this target counts witnesses only")

func (t *Target) Stored(context.Context, []ledger.Range) ([]uint64, error) { return nil, errNoFleet }
func (t *Target) StoredSeqs(context.Context, []ledger.Range) ([][]uint64, error) {
	return nil, errNoFleet
}
func (t *Target) Suppressed() (map[string]uint64, bool) { return nil, false }

// Close drops the connections.
func (t *Target) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, nc := range t.conns {
		nc.Close()
	}
	t.conns = map[string]*nats.Conn{}
	return nil
}

// RunWitness runs a bench of the witness devices w describes on base (the
// pipeline's addresses), waits for the pipeline to drain and returns the
// ledger. Their ids start WitnessPrefix, their boots this run's.
func RunWitness(ctx context.Context, base bench.Config, w scenario.Witness, log *slog.Logger) (scenario.Ledger, error) {
	cfg := base
	boot := uint64(time.Now().UnixNano())
	cfg.Fleet.Devices, cfg.Fleet.Rate, cfg.Fleet.Duration = w.Devices, w.Rate, w.Duration
	cfg.Fleet.Chaos, cfg.Fleet.Reboots, cfg.Fleet.Seed = w.Chaos, w.Reboots, int64(boot)
	cfg.Fleet.IDPrefix = WitnessPrefix // also the devices' MQTT client ids: apart from any fleet
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 60 * time.Second
	}
	rep, _, err := bench.Run(ctx, cfg, io.Discard, log)
	if err != nil {
		return scenario.Ledger{}, err
	}
	return WitnessLedger(rep), nil
}

// WitnessLedger is the scenario's view of a bench report.
func WitnessLedger(r bench.Report) scenario.Ledger {
	l := scenario.Ledger{
		Devices: r.Devices, Boot: r.Boot,
		Counts:        r.Counts,
		QuarantinedBy: map[string]uint64{}, HostileSent: r.Hostile.Sent,
		Misclassified: r.Hostile.Misclassified, HostileMissing: r.Hostile.Missing,
		Resent: r.Duplicates.Resent, Duplicates: r.Duplicates.SuppressedByStream, DuplicatesByDevice: r.Duplicates.ByDevice,
		Reboots: r.Behaviours.Reboots, Boots: r.Behaviours.Boots, DrainSecs: r.DrainSecs,
		OK: r.OK, Problems: r.Problems, Missing: []ledger.Range{},
	}
	for reason, n := range r.DeadLettered {
		l.QuarantinedBy[reason] = n
		l.Quarantined += n
	}
	for i, m := range r.Missing {
		if i == ledger.MaxMissing {
			break
		}
		l.Missing = append(l.Missing, ledger.Range{Device: m.Device, Boot: m.Boot, From: m.From, To: m.To})
	}
	return l
}
