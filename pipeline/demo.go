package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/dirlock"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// DemoConfig is `telemetry demo`: the pipeline, the dashboard, the
// presenter API and a fleet of simulated devices, in one process.
type DemoConfig struct {
	Regions []string
	// StreamBudget is READINGS' byte limit in each region; 0:
	// stream.DefaultReadingsBudget.
	StreamBudget int64
	// DuplicateWindow is the streams' duplicate window; 0:
	// stream.DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// NATSCluster is how many servers each region runs, every stream on
	// all of them (0 or 1: one server, streams unreplicated).
	NATSCluster int
	// Ingests per region and storage Writers, each sharing its stage's
	// load (Config.Ingests, Config.Writers).
	Ingests, Writers int
	NATSPorts        map[string]int
	MQTT             string
	MQTTWS           string // MQTT over WebSocket for browsers; empty: none
	// MaxPhones bounds the phones joined at once (POST /api/join, with
	// MQTTWS); 0: join.DefaultMaxPhones.
	MaxPhones int
	// PublicURL is the dashboard's address as phones reach it, for the
	// join link and its QR code; empty: the address the join view is
	// opened at.
	PublicURL string
	// JoinLinkTTL is how long a join link lets phones in; 0:
	// join.DefaultLinkTTL.
	JoinLinkTTL    time.Duration
	MQTTPerAddress int // 0: broker.DefaultMaxConnsPerIP
	Auth           MQTTAuth
	// Listen is the dashboard's address, with the presenter API beside it.
	Listen          string
	StorageListen   string
	ClickHouse      string // as Config.ClickHouse
	ClickHouseUsers storage.Config
	// DataDir holds NATS's and a demo-started ClickHouse's data; one demo
	// at a time uses it. Fresh empties it first.
	DataDir string
	Fresh   bool
	// Devices publish Rate readings per second in all, their sensors
	// seeded with Seed.
	Devices int
	Rate    float64
	Seed    int64
	// PresenterToken turns the presenter API on; ScenarioWindow is how
	// long a scenario's fault lasts unless asked otherwise (0:
	// scenario.DefaultWindow); ScenarioLead, when set, replaces the
	// scenarios' lead and tail (tests make them short).
	PresenterToken string
	ScenarioWindow time.Duration
	ScenarioLead   time.Duration
	// AllowedOrigins and AllowedHosts are the dashboard's (dashboard.Config).
	AllowedOrigins, AllowedHosts []string
	// Profiling serves Go's profiles on Listen.
	Profiling bool

	// natsPorts holds --nats-ports until SetFlagDefaults reads it into
	// NATSPorts (it needs --regions, which may come later).
	natsPorts string
}

// Demo is a configured demo; Run runs it.
type Demo struct {
	cfg  DemoConfig
	topo stream.Topology
	out  io.Writer
	log  *slog.Logger
}

// NewDemo checks cfg without starting anything. Progress lines go to out.
func NewDemo(cfg DemoConfig, out io.Writer, log *slog.Logger) (*Demo, error) {
	cfg.MQTTPerAddress = cmp.Or(cfg.MQTTPerAddress, broker.DefaultMaxConnsPerIP)
	cfg.ScenarioWindow = cmp.Or(cfg.ScenarioWindow, scenario.DefaultWindow)
	// Anonymous MQTT only on loopback.
	if err := (broker.Config{Listen: cfg.MQTT, ListenWS: cfg.MQTTWS, Insecure: cfg.Auth.Insecure, MaxConnsPerIP: cfg.MQTTPerAddress}).Validate(); err != nil {
		return nil, err
	}
	if cfg.Devices >= cfg.MQTTPerAddress {
		return nil, fmt.Errorf("--devices %d: the fleet connects from one address, which the broker bounds to --mqtt-max-per-address %d; raise it", cfg.Devices, cfg.MQTTPerAddress)
	}
	topo := stream.DefaultTopology(cfg.Regions)
	topo.ReadingsMaxBytes = cmp.Or(cfg.StreamBudget, topo.ReadingsMaxBytes)
	topo.DuplicateWindow = cmp.Or(cfg.DuplicateWindow, topo.DuplicateWindow)
	topo.Replicas = max(cfg.NATSCluster, 1)
	if cfg.NATSCluster > stream.MaxClusterSize {
		return nil, fmt.Errorf("--nats-cluster %d: want 1 to %d servers per region", cfg.NATSCluster, stream.MaxClusterSize)
	}
	if cfg.Ingests < 0 || cfg.Ingests > MaxInstances {
		return nil, fmt.Errorf("--ingests %d: want 1 to %d per region", cfg.Ingests, MaxInstances)
	}
	if cfg.Writers < 0 || cfg.Writers > MaxInstances {
		return nil, fmt.Errorf("--writers %d: want 1 to %d", cfg.Writers, MaxInstances)
	}
	if err := topo.Validate(); err != nil {
		return nil, err
	}
	return &Demo{cfg: cfg, topo: topo, out: out, log: log}, nil
}

// Run runs the demo until ctx ends or a part fails, and releases
// everything before it returns.
func (d *Demo) Run(ctx context.Context) error {
	f, regions, log := d.cfg, d.cfg.Regions, d.log
	say := func(format string, a ...any) { fmt.Fprintf(d.out, "demo: "+format+"\n", a...) }
	// One demo per data dir: a second would open the first's live stores.
	lock, err := dirlock.Acquire(f.DataDir, fmt.Sprintf("telemetry demo (pid %d, dashboard %s, started %s)",
		os.Getpid(), f.Listen, time.Now().Format(time.DateTime)))
	if err != nil {
		return fmt.Errorf("%w: stop that demo first (Ctrl-C in its terminal), or give this one another --data-dir", err)
	}
	defer lock.Release()
	if f.Fresh {
		if err := lock.Empty(); err != nil {
			return err
		}
		say("fresh start: %s emptied", f.DataDir)
	}
	say("%s (--stream-budget)", d.topo.Budget().Describe(f.Rate, 5000))
	if err := d.topo.Budget().Check(f.DataDir); err != nil {
		say("WARNING: %v: lower --stream-budget or free some disk", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	// stop ends what runs when a later part cannot start.
	stop := func(err error) error {
		cancel()
		g.Wait()
		return err
	}
	p, err := New(ctx, Config{
		Regions: regions, Topology: d.topo, NATSPorts: f.NATSPorts, MQTT: f.MQTT, MQTTWS: f.MQTTWS, MQTTPerAddress: f.MQTTPerAddress, DataDir: f.DataDir,
		Auth: f.Auth, ClickHouse: f.ClickHouse, StorageListen: f.StorageListen, ClickHouseUsers: f.ClickHouseUsers, Say: say,
		Ingests: f.Ingests, Writers: f.Writers,
	}, log)
	if err != nil {
		return err
	}
	defer p.Close()
	g.Go(func() error { return p.Run(ctx) })

	// The demo serves the dashboard's handler on Listen beside the
	// presenter API; the dashboard's own listener stays on a free loopback
	// port, unused.
	ln, err := httpserv.Listen(f.Listen, dashboard.ListenerLimits, log)
	if err != nil {
		return stop(fmt.Errorf("dashboard: %w (use --listen to pick another address)", err))
	}
	defer ln.Close()
	// One /metrics has both HTTP listeners' refusals: a label tells them apart.
	pageReg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"listener": "dashboard"}, pageReg).MustRegister(ln.Refused)
	p.AddGatherer(pageReg)
	dash, err := dashboard.New(dashboard.Config{
		NATSURL:          p.nats.URLAs(p.home, "dashboard"),
		Domain:           p.home,
		Regions:          regions,
		Listen:           "127.0.0.1:0",
		StorageURL:       p.storageURL,
		StorageOffReason: p.storageOff,
		Gatherer:         p.gatherers,
		Replication:      dashboard.ReplicationFrom(p.status, regions),
		Alerts:           stream.AlertsFrom(p.status),
		AllowedOrigins:   f.AllowedOrigins,
		AllowedHosts:     f.AllowedHosts,
		Presenter:        f.PresenterToken != "",
		Join:             f.MQTTWS != "",
		Fallbacks:        p.dashboardFallbacks(),
	}, log)
	if err != nil {
		return stop(fmt.Errorf("%w (use --listen to pick another address)", err))
	}
	defer dash.Close()
	g.Go(func() error { return dash.Run(ctx) })

	var runner *scenario.Runner
	if f.PresenterToken != "" {
		target := NewTarget(p, log)
		defer target.Close()
		scfg := scenario.Config{Regions: regions, Window: f.ScenarioWindow, Lead: f.ScenarioLead, Tail: f.ScenarioLead}
		control.OnDashboard(&scfg, dash, say)
		runner, err = scenario.New(scfg, target, log)
		if err != nil {
			return stop(err)
		}
		defer runner.Close()
		g.Go(func() error { return runner.Run(ctx) })
	}
	mux := http.NewServeMux()
	presenter := scenario.Handler(runner, f.PresenterToken)
	mux.Handle("/api/scenario", presenter)
	mux.Handle("/api/scenario/", presenter)
	mux.Handle("/", dash.Handler())
	if port := p.BrokerWSPort(); port != 0 {
		tracer := join.NewTracer(p.TracerConfig())
		defer tracer.Close()
		phones, err := join.New(join.Config{PhoneKey: devicecred.PhoneKey(cmp.Or(f.Auth.FleetSecret, deploy.DemoFleetSecret)),
			Regions: regions, BrokerWSPort: port, MaxPhones: f.MaxPhones, PublicURL: f.PublicURL, Tracer: tracer,
			LinkTTL: f.JoinLinkTTL, Broker: join.Embedded(p), PresenterToken: f.PresenterToken}, log)
		if err != nil {
			return stop(err)
		}
		joinReg := prometheus.NewRegistry()
		joinReg.MustRegister(phones.Collectors()...)
		p.AddGatherer(joinReg)
		mux.Handle("/api/join", phones)
		mux.Handle("/api/join/remove", phones)
		mux.Handle("/api/journey", phones)
		mux.Handle("/join", phones.Page())
		mux.Handle("/join/", phones.Page())
		say("phones join        http://%s/join/show (the join view: the QR code of the join link; up to %d phones at once, publishing over MQTT on WebSocket, port %d)", ln.Addr(), phones.Max(), port)
	}
	if f.Profiling {
		httpserv.Profiling(mux)
		say("profiles           http://%s/debug/pprof/ (--pprof)", ln.Addr())
	}
	// The presenter API and the profiles answer to the same hosts as the
	// dashboard (DNS rebinding: dashboard.CheckHost).
	g.Go(func() error { return httpserv.Serve(ctx, ln, dash.CheckHost(mux), log) })

	fleet, err := devices.New(devices.Config{Broker: p.BrokerURL(), FleetSecret: f.Auth.FleetSecret, Regions: regions, Devices: f.Devices, Rate: f.Rate, Seed: f.Seed}, log)
	if err != nil {
		return stop(err)
	}
	defer fleet.Close()
	// Scenario ledgers count every reading of this fleet in their window.
	p.AttachFleet(fleet)
	g.Go(func() error { return fleet.Run(ctx) })

	say("%d devices publishing %.0f readings/s", f.Devices, f.Rate)
	say("dashboard          http://%s   (Ctrl-C to stop)", ln.Addr())
	for _, n := range cli.Exposure("the dashboard", ln.Addr().String(), "set --presenter-token and your own passwords", f.PublicDefaults()) {
		if n.Warn {
			say("WARNING: %s", n.Text)
		} else {
			say("%s", n.Text)
		}
	}
	if runner != nil {
		say("presenter API      http://%s/api/scenario (bearer token from --presenter-token); try: telemetry scenario cut-region %s --demo-url http://%s", ln.Addr(), regions[len(regions)-1], ln.Addr())
	} else {
		say("presenter API      off: no --presenter-token (or TELEMETRY_PRESENTER_TOKEN), so no scenario buttons and no `telemetry scenario`")
	}
	err = g.Wait()
	say("stopped")
	return err
}

// PublicDefaults lists the public demo defaults that the demo runs with
// and that other machines can reach: the embedded MQTT broker when MQTT is
// beyond loopback, and ClickHouse's users when ClickHouse is beyond
// loopback. The embedded NATS servers and a ClickHouse the demo starts
// listen on loopback only.
func (c DemoConfig) PublicDefaults() []string {
	var out []string
	if !cli.IsLoopback(c.MQTT) {
		if cmp.Or(c.Auth.FleetSecret, deploy.DemoFleetSecret) == deploy.DemoFleetSecret ||
			cmp.Or(c.Auth.IngestPassword, deploy.DemoMQTTIngestPassword) == deploy.DemoMQTTIngestPassword {
			out = append(out, "the MQTT broker on "+c.MQTT+" (--fleet-secret, --mqtt-ingest-password)")
		}
	}
	if c.ClickHouse != "" && c.ClickHouse != "none" && !cli.IsLoopback(c.ClickHouse) {
		u := c.ClickHouseUsers
		if cmp.Or(u.ClickHousePassword, deploy.DemoClickHouseWriterPassword) == deploy.DemoClickHouseWriterPassword ||
			cmp.Or(u.HistoryPassword, deploy.DemoClickHouseReaderPassword) == deploy.DemoClickHouseReaderPassword {
			out = append(out, "the ClickHouse users on "+c.ClickHouse+" (--clickhouse-password, --history-password, and deploy/clickhouse/users.d/telemetry.xml)")
		}
	}
	return out
}

// dashboardLedger is what the dashboard shows of a finished scenario.
// dashboardFallbacks are the regions other than home, in display order, for
// the dashboard to read from when home's server is gone.
func (p *Pipeline) dashboardFallbacks() []dashboard.Fallback {
	var fb []dashboard.Fallback
	for _, r := range p.cfg.Regions {
		if r != p.home {
			fb = append(fb, dashboard.Fallback{Region: r, NATSURL: p.nats.URLAs(r, "dashboard")})
		}
	}
	return fb
}

// DemoUsage is the help of `telemetry demo`.
const DemoUsage = `Run the whole pipeline in one process: an embedded MQTT broker, one embedded
NATS JetStream server per region joined through a hub, ingest per region,
storage, the dashboard and a fleet of simulated devices.

ClickHouse: --clickhouse ADDR if given; else a clickhouse-server (or
clickhouse) found on PATH, started and stopped by the demo with its data under
--data-dir; else the demo runs without storage and says so.

With --presenter-token the presenter API is on, on the dashboard's address:
POST /api/scenario/<name> runs a failure scenario (telemetry scenario
--help lists them) and GET /api/scenario shows the event log and the
ledgers, both with the header Authorization: Bearer <token>. The dashboard
then shows a presenter panel: type the token once, or open the page as
http://127.0.0.1:8080/#token=<token>; each scenario is marked on the charts
and ends with its ledger on screen.

Ctrl-C stops everything cleanly.`
