package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// pipelineConfig is the in-process pipeline that demo and bench --demo run:
// everything but the devices and the dashboard.
type pipelineConfig struct {
	regions   []string
	topo      stream.Topology
	natsPorts map[string]int
	mqtt      string
	// mqttPerAddress bounds the broker's connections from one address
	// (0: broker.DefaultMaxConnsPerIP).
	mqttPerAddress int
	mqttAuth       mqttAuth
	dataDir        string
	clickhouse     string // address of a running ClickHouse; empty: find one
	storageListen  string
	requireStore   bool // fail instead of running without storage
	// chUsers are storage's ClickHouse users and passwords (the writer's
	// and the history's); zero fields are the demo users of
	// deploy/clickhouse/users.d/telemetry.xml.
	chUsers storage.Config
}

// mqttAuth is how clients log in to the embedded broker: devices with
// the credential the fleet secret gives each (internal/devicecred), the
// service users of deploy/mosquitto/passwd, with other passwords when
// given.
type mqttAuth struct {
	insecure bool // anonymous clients too (loopback only)
	// fleetSecret is the devices' secret, ingestPassword ingest's
	// password; empty: the demo defaults.
	fleetSecret, ingestPassword string
}

// passwd is the broker's password file: the repository's, or one made for
// another password.
func (a mqttAuth) passwd() ([]byte, error) {
	in := cmp.Or(a.ingestPassword, deploy.DemoMQTTIngestPassword)
	if in == deploy.DemoMQTTIngestPassword {
		return nil, nil // deploy.MosquittoPasswd
	}
	return broker.PasswordFile(map[string]string{deploy.MQTTIngestUser: in, deploy.MQTTHealthUser: deploy.MQTTHealthPassword})
}

// pipeline is a running in-process pipeline. Its long-running parts run in
// the errgroup given to startPipeline and stop with its context.
type pipeline struct {
	home       string // the region storage and the dashboard read from
	nats       *stream.Embedded
	broker     *broker.Broker
	mqttAuth   mqttAuth               // how clients log in to broker
	ingests    map[string]*ingestSlot // by region
	gatherers  *gatherers
	storageURL string // empty when storage is off
	storageOff string // why storage is off
	// status reports the regions' streams and replication lag.
	status func(context.Context) []stream.RegionStatus
	// chAddr receives the ClickHouse address once storage is up.
	chAddr chan string
	stop   context.CancelFunc

	// fleet is the demo's own devices, whose every reading a scenario's
	// ledger counts; nil until attachFleet.
	fleet atomic.Pointer[devices.Fleet]

	mu        sync.Mutex
	storeAddr string           // ClickHouse address once storage is up
	storeCfg  storage.Config   // storage's configuration once it is up
	ch        *chserver.Server // the ClickHouse the pipeline started, if any
}

// clickhouse returns the ClickHouse address once storage is up, and the
// server when the pipeline started it.
func (p *pipeline) clickhouse() (string, *chserver.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeAddr, p.ch
}

// attachFleet hands the scenarios the fleet that publishes through the
// pipeline, so that their ledgers count every reading of it.
func (p *pipeline) attachFleet(f *devices.Fleet) { p.fleet.Store(f) }

// storageConfig is storage's configuration (ClickHouse address and users)
// once storage is up: what to dial ClickHouse with as the writer does.
func (p *pipeline) storageConfig() storage.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeCfg
}

// demoDrainTimeout is how long the demo's storage keeps trying to store
// its last batch when stopped; an insert takes milliseconds when
// ClickHouse is up.
const demoDrainTimeout = 2 * time.Second

func startPipeline(parent context.Context, g *errgroup.Group, cfg pipelineConfig, say func(string, ...any), log *slog.Logger) (*pipeline, error) {
	ctx, cancel := context.WithCancel(parent)
	p := &pipeline{home: cfg.regions[0], gatherers: &gatherers{}, chAddr: make(chan string, 1), stop: cancel,
		ingests: map[string]*ingestSlot{}}
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		cancel()
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			cancel()
			p.close()
		}
	}()

	// NATS: the hub and one JetStream domain per region.
	nats, err := stream.StartEmbedded(stream.EmbeddedConfig{Regions: cfg.regions, ClientPorts: cfg.natsPorts, DataDir: filepath.Join(cfg.dataDir, "nats")}, log)
	if err != nil {
		return nil, fmt.Errorf("starting NATS regions: %w (are other servers on the ports? see --nats-ports)", err)
	}
	p.nats = nats
	if err := nats.Apply(ctx, cfg.topo); err != nil {
		return nil, err
	}
	urls := map[string]string{}
	for _, r := range cfg.regions {
		urls[r] = nats.URLAs(r, "dashboard")
		say("NATS region %-9s %s", r, redact.URL(nats.URL(r)))
	}
	lag := stream.NewLagCollector(regionStatus(urls, cfg.regions), stream.StatusInterval)
	p.status = lag.Statuses
	// The mender restarts a source that nats-server leaves waiting once
	// the region it reads from is back (stream.Mender).
	mender, err := nats.NewMender(cfg.topo, lag.Statuses, log.With("component", "mender"))
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return mender.Run(ctx) })
	lagReg := prometheus.NewRegistry()
	lagReg.MustRegister(lag, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "telemetry_replication_restarts_total",
		Help: "Sources restarted because they stayed down while the region they read from answered (stream.Mender).",
	}, func() float64 { return float64(mender.Restarts()) }), nats.Refused())
	p.gatherers.add(lagReg)

	passwd, err := cfg.mqttAuth.passwd()
	if err != nil {
		return nil, err
	}
	p.mqttAuth = cfg.mqttAuth
	p.broker, err = broker.Start(broker.Config{Listen: cfg.mqtt, Passwd: passwd, FleetSecret: cfg.mqttAuth.fleetSecret,
		Insecure: cfg.mqttAuth.insecure, MaxConnsPerIP: cfg.mqttPerAddress}, log)
	if errors.Is(err, broker.ErrInsecureNotLoopback) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (is Mosquitto or another demo running? use --mqtt to pick another address)", err)
	}
	p.gatherers.add(p.broker.Registry())
	if cfg.mqttAuth.insecure {
		say("MQTT IS INSECURE: anyone on this machine may publish and read without credentials (--insecure)")
	}
	say("MQTT broker        %s", p.broker.URL())

	for _, r := range cfg.regions {
		// Ingest reaches the broker through a relay, so that a scenario can
		// crash it: cutting the relay drops its connection with nothing in
		// flight acknowledged.
		link, err := stream.NewLink("ingest-"+r+"-mqtt", p.broker.Addr(), log)
		if err != nil {
			return nil, err
		}
		slot := &ingestSlot{
			cfg: ingest.Config{Region: r, Broker: "tcp://" + link.Addr(), NATSURL: nats.URLAs(r, stream.IngestUser(r)),
				Password: cfg.mqttAuth.ingestPassword},
			link: link, reg: prometheus.NewRegistry(), log: log,
			crash: make(chan chan error), start: make(chan chan error),
		}
		p.ingests[r] = slot
		in, err := ingest.New(slot.cfg, log)
		if err != nil {
			return nil, err
		}
		p.gatherers.add(slot.reg)
		g.Go(func() error { return slot.run(ctx, in) })
	}

	// Storage, when there is a ClickHouse. Starting one takes a few seconds,
	// so it happens beside the rest: readings wait in JetStream meanwhile.
	chArgv := []string(nil)
	if cfg.clickhouse == "none" {
		p.storageOff = "disabled with --clickhouse none"
		if cfg.requireStore {
			return nil, errors.New("storage is required here: drop --clickhouse none")
		}
		say("STORAGE IS OFF: %s. Readings still flow through NATS and the dashboard.", p.storageOff)
		ok = true
		return p, nil
	}
	if cfg.clickhouse == "" {
		chArgv, err = chserver.Find()
		if errors.Is(err, chserver.ErrNotFound) {
			p.storageOff = "no ClickHouse found (install clickhouse-server, or pass --clickhouse host:port)"
			if cfg.requireStore {
				return nil, errors.New(p.storageOff)
			}
			say("STORAGE IS OFF: %s. Readings still flow through NATS and the dashboard.", p.storageOff)
			ok = true
			return p, nil
		} else if err != nil {
			return nil, err
		}
	}
	// Storage's HTTP API is bound now, so that its address is known to the
	// dashboard before ClickHouse is up; it answers "starting" until then.
	ln, err := httpserv.Listen(cfg.storageListen, httpserv.ServiceLimits, log)
	if err != nil {
		return nil, fmt.Errorf("storage API: %w (use --storage-listen to pick another address)", err)
	}
	apiReg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"listener": "storage_api"}, apiReg).MustRegister(ln.Refused)
	p.gatherers.add(apiReg)
	api := &lateHandler{}
	g.Go(func() error { return httpserv.Serve(ctx, ln, api, log) })
	p.storageURL = "http://" + ln.Addr().String()
	g.Go(func() error {
		addr := cfg.clickhouse
		if addr == "" {
			dir := filepath.Join(cfg.dataDir, "clickhouse")
			say("starting ClickHouse (%s), data in %s ...", chArgv[0], dir)
			srv, err := chserver.Start(ctx, chserver.Options{Argv: chArgv, Dir: dir, Logger: log})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("starting ClickHouse: %w", err)
			}
			defer srv.Stop()
			addr = srv.Addr()
			p.mu.Lock()
			p.ch = srv
			p.mu.Unlock()
		}
		stCfg := storage.Config{NATSURL: nats.URLAs(p.home, "storage"), Domain: p.home, ClickHouseAddr: addr, Listen: storage.NoListen,
			ClickHouseUser: cfg.chUsers.ClickHouseUser, ClickHousePassword: cfg.chUsers.ClickHousePassword,
			HistoryUser: cfg.chUsers.HistoryUser, HistoryPassword: cfg.chUsers.HistoryPassword,
			// Ctrl-C stops the demo within 3 s even with ClickHouse down
			// (a scenario's outage): the batch in hand goes back to
			// JetStream, which keeps it for the next start.
			DrainTimeout: demoDrainTimeout}
		for _, r := range cfg.regions {
			if r != p.home {
				stCfg.Fallbacks = append(stCfg.Fallbacks, storage.Fallback{Region: r, NATSURL: nats.URLAs(r, "storage")})
			}
		}
		st, err := storage.New(stCfg, log)
		if err != nil {
			return err
		}
		defer st.Close()
		api.set(st.Handler())
		p.gatherers.add(st.Registry())
		say("storage            ClickHouse %s, status at %s/api/status", addr, p.storageURL)
		p.mu.Lock()
		p.storeAddr = addr
		p.storeCfg = stCfg
		p.mu.Unlock()
		p.chAddr <- addr
		return st.Run(ctx)
	})
	ok = true
	return p, nil
}

// close releases what startPipeline opened, after the group has stopped.
func (p *pipeline) close() {
	for _, slot := range p.ingests {
		slot.link.Close()
	}
	if p.broker != nil {
		p.broker.Close()
	}
	if p.nats != nil {
		p.nats.Close()
	}
}

// ingestSlot runs one region's ingest, one instance after another: a
// scenario may crash the running one and later start a fresh one.
type ingestSlot struct {
	cfg  ingest.Config
	link *stream.Link // between ingest and the broker
	reg  *prometheus.Registry
	log  *slog.Logger
	// crash and start carry requests from the scenarios to run; each
	// request is answered on its channel.
	crash chan chan error
	start chan chan error
}

// run runs in, and its successors, until ctx is cancelled.
func (s *ingestSlot) run(ctx context.Context, in *ingest.Ingest) error {
	for {
		s.reg.MustRegister(in.Metrics())
		ictx, icancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(ictx) }()
		var reply chan error
		select {
		case <-ctx.Done():
		case err := <-done:
			icancel()
			in.Close()
			return fmt.Errorf("ingest %s stopped on its own: %w", s.cfg.Region, err)
		case reply = <-s.crash:
			// The connection goes first, so that nothing in flight is
			// acknowledged: the broker keeps it in the session and
			// redelivers it to the next instance.
			s.link.Cut()
		}
		icancel()
		err := <-done
		in.Close()
		s.reg.Unregister(in.Metrics())
		if reply == nil {
			return err
		}
		reply <- nil
		// Down until a scenario starts it again.
		for in = nil; in == nil; {
			select {
			case <-ctx.Done():
				s.link.Heal()
				return nil
			case reply = <-s.start:
			}
			s.link.Heal()
			in, err = ingest.New(s.cfg, s.log)
			reply <- err
		}
	}
}

// request hands a crash or start request to run and waits for its answer.
func (s *ingestSlot) request(ctx context.Context, ch chan chan error, what string) error {
	reply := make(chan error, 1)
	select {
	case ch <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
		return fmt.Errorf("ingest %s cannot %s now: it is not in the state for it", s.cfg.Region, what)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatherers collects the registries of parts that start at different times,
// for one /metrics.
type gatherers struct {
	mu sync.Mutex
	gs prometheus.Gatherers
}

func (g *gatherers) add(r prometheus.Gatherer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gs = append(g.gs, r)
}

// Gather implements prometheus.Gatherer.
func (g *gatherers) Gather() ([]*dto.MetricFamily, error) {
	g.mu.Lock()
	gs := slices.Clone(g.gs)
	g.mu.Unlock()
	return gs.Gather()
}

// lateHandler serves storage's API once storage exists, and "starting"
// before.
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `{"state":"starting","error":"ClickHouse is starting"}`)
}

func tempDir() string { return os.TempDir() }
