package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// Config is the in-process pipeline that the demo and bench --demo run:
// everything but the devices and the dashboard.
type Config struct {
	Regions   []string
	Topology  stream.Topology
	NATSPorts map[string]int // client port by region; 0 or missing: a free one
	MQTT      string         // the embedded broker's address
	MQTTWS    string         // its MQTT over WebSocket address; empty: none
	// MQTTPerAddress bounds the broker's connections from one address
	// (0: broker.DefaultMaxConnsPerIP).
	MQTTPerAddress int
	Auth           MQTTAuth
	DataDir        string
	// ClickHouse is the address of a running ClickHouse; empty: start one
	// found on PATH, or run without storage; "none": without storage.
	ClickHouse     string
	StorageListen  string
	RequireStorage bool // fail instead of running without storage
	// ClickHouseUsers are storage's ClickHouse users and passwords (the
	// writer's and the history's); zero fields are the demo users of
	// deploy/clickhouse/users.d/telemetry.xml.
	ClickHouseUsers storage.Config
	// Ingests is how many ingests each region runs, sharing its MQTT
	// subscription (instances 1 to N); Writers how many storage writers
	// share the durable consumer. 0 or 1: one; at most MaxInstances.
	Ingests, Writers int
	// Say writes one line of progress for the console; nil: none.
	Say func(format string, args ...any)
}

// MaxInstances bounds Config.Ingests and Config.Writers: enough to show
// load sharing and a failover on one machine.
const MaxInstances = 8

// MQTTAuth is how clients log in to the embedded broker: devices with
// the credential the fleet secret gives each (internal/devicecred), the
// service users of deploy/mosquitto/passwd, with other passwords when
// given.
type MQTTAuth struct {
	Insecure bool // anonymous clients too (loopback only)
	// FleetSecret is the devices' secret, IngestPassword ingest's
	// password; empty: the demo defaults.
	FleetSecret, IngestPassword string
}

// passwd is the broker's password file: the repository's, or one made for
// another password.
func (a MQTTAuth) passwd() ([]byte, error) {
	in := cmp.Or(a.IngestPassword, deploy.DemoMQTTIngestPassword)
	if in == deploy.DemoMQTTIngestPassword {
		return nil, nil // deploy.MosquittoPasswd
	}
	return broker.PasswordFile(map[string]string{deploy.MQTTIngestUser: in, deploy.MQTTHealthUser: deploy.MQTTHealthPassword})
}

// Pipeline is an in-process pipeline: New starts its servers, Run runs its
// long-running parts until its context ends, Close releases the rest.
type Pipeline struct {
	cfg        Config
	log        *slog.Logger
	home       string // the region storage and the dashboard read from
	nats       *stream.Embedded
	broker     *broker.Broker
	ingests    map[string][]*ingestSlot // by region, instance 1 first
	mender     *stream.Mender
	gatherers  *gatherers
	storageLn  net.Listener // storage's API; nil when storage is off
	storageAPI *lateHandler
	chArgv     []string // how to start ClickHouse, when the pipeline does
	storageURL string   // empty when storage is off
	storageOff string   // why storage is off
	// status reports the regions' streams and replication lag.
	status func(context.Context) []stream.RegionStatus
	// chAddr receives the ClickHouse address once storage is up.
	chAddr chan string

	// fleet is the demo's own devices, whose every reading a scenario's
	// ledger counts; nil until AttachFleet.
	fleet atomic.Pointer[devices.Fleet]

	mu        sync.Mutex
	storeAddr string           // ClickHouse address once storage is up
	storeCfg  storage.Config   // storage's configuration once it is up
	ch        *chserver.Server // the ClickHouse the pipeline started, if any
}

// Home is the region storage and the dashboard read from: the first.
func (p *Pipeline) Home() string { return p.home }

// NATS is the pipeline's regions.
func (p *Pipeline) NATS() *stream.Embedded { return p.nats }

// BrokerURL is the embedded broker's address for MQTT clients.
func (p *Pipeline) BrokerURL() string { return p.broker.URL() }

// BrokerWSPort is the port of the broker's MQTT over WebSocket listener;
// 0 without one (Config.MQTTWS).
func (p *Pipeline) BrokerWSPort() int { return p.broker.WSPort() }

// TracerConfig is where a phone's journey is read (join.NewTracer): each
// region's READINGS as the dashboard's NATS user, and ClickHouse as
// storage's read-only history user once storage is up.
func (p *Pipeline) TracerConfig() join.TracerConfig {
	urls := map[string]string{}
	for _, r := range p.nats.Regions() {
		urls[r] = p.nats.URLAs(r, "dashboard")
	}
	return join.TracerConfig{Regions: p.nats.Regions(), NATS: urls, ClickHouse: func() (driver.Conn, error) {
		if addr, _ := p.clickhouse(); addr == "" {
			return nil, errors.New("storage is not up")
		}
		return storage.DialHistory(p.StorageConfig())
	}}
}

// RemovePhones ends every phone credential issued until at and
// disconnects the phones (join.Remover: the presenter's "remove all
// phones").
func (p *Pipeline) RemovePhones(at time.Time) int { return p.broker.RemovePhones(at) }

// StorageURL is storage's HTTP API, empty when storage is off; StorageOff
// then says why.
func (p *Pipeline) StorageURL() string { return p.storageURL }

// StorageOff says why storage is off; empty when it runs.
func (p *Pipeline) StorageOff() string { return p.storageOff }

// Gatherer serves the metrics of every part: one /metrics for the demo.
func (p *Pipeline) Gatherer() prometheus.Gatherer { return p.gatherers }

// AddGatherer adds another part's metrics to Gatherer.
func (p *Pipeline) AddGatherer(g prometheus.Gatherer) { p.gatherers.add(g) }

// Status reports every region's streams and replication, sampled every
// stream.StatusInterval.
func (p *Pipeline) Status(ctx context.Context) []stream.RegionStatus { return p.status(ctx) }

// StorageUp delivers the ClickHouse address once storage runs (once).
func (p *Pipeline) StorageUp() <-chan string { return p.chAddr }

// clickhouse returns the ClickHouse address once storage is up, and the
// server when the pipeline started it.
func (p *Pipeline) clickhouse() (string, *chserver.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeAddr, p.ch
}

// AttachFleet hands the scenarios the fleet that publishes through the
// pipeline, so that their ledgers count every reading of it.
func (p *Pipeline) AttachFleet(f *devices.Fleet) { p.fleet.Store(f) }

// StorageConfig is storage's configuration (ClickHouse address and users)
// once storage is up: what to dial ClickHouse with as the writer does.
func (p *Pipeline) StorageConfig() storage.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeCfg
}

// DrainTimeout is how long the in-process storage keeps trying to store
// its last batch when stopped; an insert takes milliseconds when
// ClickHouse is up.
const DrainTimeout = 2 * time.Second

// New starts the NATS regions with the topology, the broker, each
// region's ingest (not yet running) and storage's API listener; Run runs
// them. When it fails, what it started is closed.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Pipeline, error) {
	if cfg.Say == nil {
		cfg.Say = func(string, ...any) {}
	}
	say := cfg.Say
	p := &Pipeline{cfg: cfg, log: log, home: cfg.Regions[0], gatherers: &gatherers{}, chAddr: make(chan string, 1),
		ingests: map[string][]*ingestSlot{}}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	// NATS: the hub and one JetStream domain per region.
	// A topology replicated on N servers runs each region as a cluster of N.
	nats, err := stream.StartEmbedded(stream.EmbeddedConfig{Regions: cfg.Regions, ClientPorts: cfg.NATSPorts, DataDir: filepath.Join(cfg.DataDir, "nats"),
		ClusterSize: cfg.Topology.Replicas}, log)
	if err != nil {
		return nil, fmt.Errorf("starting NATS regions: %w (are other servers on the ports? see --nats-ports)", err)
	}
	p.nats = nats
	if err := nats.Apply(ctx, cfg.Topology); err != nil {
		return nil, err
	}
	urls := map[string]string{}
	for _, r := range cfg.Regions {
		urls[r] = nats.URLAs(r, "dashboard")
		say("NATS region %-9s %s", r, redact.URL(nats.URL(r)))
	}
	lag := stream.NewLagCollector(stream.StatusOf(urls, cfg.Regions), stream.StatusInterval)
	p.status = lag.Statuses
	// The mender restarts a source that nats-server leaves waiting once
	// the region it reads from is back (stream.Mender).
	p.mender, err = nats.NewMender(cfg.Topology, lag.Statuses, log.With("component", "mender"))
	if err != nil {
		return nil, err
	}
	lagReg := prometheus.NewRegistry()
	lagReg.MustRegister(lag, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "telemetry_replication_restarts_total",
		Help: "Sources restarted because they stayed down while the region they read from answered (stream.Mender).",
	}, func() float64 { return float64(p.mender.Restarts()) }), nats.Refused())
	p.gatherers.add(lagReg)

	passwd, err := cfg.Auth.passwd()
	if err != nil {
		return nil, err
	}
	p.broker, err = broker.Start(broker.Config{Listen: cfg.MQTT, ListenWS: cfg.MQTTWS, Passwd: passwd, FleetSecret: cfg.Auth.FleetSecret,
		Insecure: cfg.Auth.Insecure, MaxConnsPerIP: cfg.MQTTPerAddress}, log)
	if errors.Is(err, broker.ErrInsecureNotLoopback) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (is Mosquitto or another demo running? use --mqtt to pick another address)", err)
	}
	p.gatherers.add(p.broker.Registry())
	if cfg.Auth.Insecure {
		say("MQTT IS INSECURE: anyone on this machine may publish and read without credentials (--insecure)")
	}
	say("MQTT broker        %s", p.broker.URL())
	if u := p.broker.WSURL(); u != "" {
		say("MQTT WebSocket     %s", u)
	}

	for _, r := range cfg.Regions {
		for i := range max(cfg.Ingests, 1) {
			// Ingest reaches the broker through a relay, so that a
			// scenario can crash it: cutting the relay drops its
			// connection with nothing in flight acknowledged.
			icfg := ingest.Config{Region: r, NATSURL: nats.URLAs(r, stream.IngestUser(r)), Password: cfg.Auth.IngestPassword}
			name := "ingest-" + r
			if cfg.Ingests > 1 {
				icfg.Instance = strconv.Itoa(i + 1)
				name += "-" + icfg.Instance
			}
			link, err := stream.NewLink(name+"-mqtt", p.broker.Addr(), log)
			if err != nil {
				return nil, err
			}
			icfg.Broker = "tcp://" + link.Addr()
			slot := &ingestSlot{cfg: icfg, link: link, reg: prometheus.NewRegistry(), log: log,
				crash: make(chan chan error), start: make(chan chan error)}
			p.ingests[r] = append(p.ingests[r], slot)
			if slot.in, err = ingest.New(slot.cfg, log); err != nil {
				return nil, err
			}
			p.gatherers.add(slot.reg)
		}
	}
	if cfg.Ingests > 1 {
		say("ingest             %d per region, sharing each region's subscription", cfg.Ingests)
	}

	// Storage, when there is a ClickHouse.
	if cfg.ClickHouse == "none" {
		p.storageOff = "disabled with --clickhouse none"
		if cfg.RequireStorage {
			return nil, errors.New("storage is required here: drop --clickhouse none")
		}
		say("STORAGE IS OFF: %s. Readings still flow through NATS and the dashboard.", p.storageOff)
		ok = true
		return p, nil
	}
	if cfg.ClickHouse == "" {
		p.chArgv, err = chserver.Find()
		if errors.Is(err, chserver.ErrNotFound) {
			p.storageOff = "no ClickHouse found (install clickhouse-server, or pass --clickhouse host:port)"
			if cfg.RequireStorage {
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
	ln, err := httpserv.Listen(cfg.StorageListen, httpserv.ServiceLimits, log)
	if err != nil {
		return nil, fmt.Errorf("storage API: %w (use --storage-listen to pick another address)", err)
	}
	p.storageLn = ln
	apiReg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"listener": "storage_api"}, apiReg).MustRegister(ln.Refused)
	p.gatherers.add(apiReg)
	p.storageAPI = &lateHandler{}
	p.storageURL = "http://" + ln.Addr().String()
	ok = true
	return p, nil
}

// Run runs the mender, every region's ingest and storage (starting
// ClickHouse first when the pipeline does: readings wait in JetStream
// meanwhile) until ctx ends or one of them fails.
func (p *Pipeline) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.mender.Run(ctx) })
	for _, slots := range p.ingests {
		for _, slot := range slots {
			g.Go(func() error { return slot.run(ctx) })
		}
	}
	if p.storageLn != nil {
		g.Go(func() error { return httpserv.Serve(ctx, p.storageLn, p.storageAPI, p.log) })
		g.Go(func() error { return p.runStorage(ctx) })
	}
	return g.Wait()
}

// runStorage starts ClickHouse when the pipeline does, then runs storage.
func (p *Pipeline) runStorage(ctx context.Context) error {
	cfg, say := p.cfg, p.cfg.Say
	addr := cfg.ClickHouse
	if addr == "" {
		dir := filepath.Join(cfg.DataDir, "clickhouse")
		say("starting ClickHouse (%s), data in %s ...", p.chArgv[0], dir)
		srv, err := chserver.Start(ctx, chserver.Options{Argv: p.chArgv, Dir: dir, Logger: p.log})
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
	stCfg := storage.Config{NATSURL: p.nats.URLAs(p.home, "storage"), Domain: p.home, ClickHouseAddr: addr, Listen: storage.NoListen,
		ClickHouseUser: cfg.ClickHouseUsers.ClickHouseUser, ClickHousePassword: cfg.ClickHouseUsers.ClickHousePassword,
		HistoryUser: cfg.ClickHouseUsers.HistoryUser, HistoryPassword: cfg.ClickHouseUsers.HistoryPassword,
		// Ctrl-C stops the demo within 3 s even with ClickHouse down
		// (a scenario's outage): the batch in hand goes back to
		// JetStream, which keeps it for the next start.
		DrainTimeout: DrainTimeout}
	for _, r := range cfg.Regions {
		if r != p.home {
			stCfg.Fallbacks = append(stCfg.Fallbacks, storage.Fallback{Region: r, NATSURL: p.nats.URLAs(r, "storage")})
		}
	}
	// Writers after the first share its durable consumer; the first
	// serves storage's API.
	var writers []*storage.Writer
	for i := range max(cfg.Writers, 1) {
		wcfg := stCfg
		if cfg.Writers > 1 {
			wcfg.Instance = strconv.Itoa(i + 1)
		}
		st, err := storage.New(wcfg, p.log)
		if err != nil {
			return err
		}
		defer st.Close()
		writers = append(writers, st)
	}
	p.storageAPI.set(writers[0].Handler())
	g, ctx := errgroup.WithContext(ctx)
	for _, st := range writers {
		p.gatherers.add(st.Registry())
		g.Go(func() error { return st.Run(ctx) })
	}
	if cfg.Writers > 1 {
		say("storage            %d writers sharing one consumer", cfg.Writers)
	}
	say("storage            ClickHouse %s, status at %s/api/status", addr, p.storageURL)
	p.mu.Lock()
	p.storeAddr = addr
	p.storeCfg = stCfg
	p.mu.Unlock()
	p.chAddr <- addr
	return g.Wait()
}

// Close releases what New opened, once Run has returned (or was never
// called).
func (p *Pipeline) Close() {
	for _, slots := range p.ingests {
		for _, slot := range slots {
			if slot.in != nil {
				slot.in.Close()
			}
			slot.link.Close()
		}
	}
	if p.storageLn != nil {
		p.storageLn.Close()
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
	in   *ingest.Ingest // the next or running instance; nil while down
	link *stream.Link   // between ingest and the broker
	reg  *prometheus.Registry
	log  *slog.Logger
	// crash and start carry requests from the scenarios to run; each
	// request is answered on its channel.
	crash chan chan error
	start chan chan error
}

// run runs the slot's ingest, and its successors, until ctx is cancelled.
// Each instance is closed when it stops.
func (s *ingestSlot) run(ctx context.Context) error {
	in := s.in
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
			s.in = nil
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
		s.in = nil
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
			s.in = in
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

// Bench runs bench.Run against a pipeline of its own (`telemetry bench
// --demo`), its data in dataDir (a temporary directory when empty), and
// stops it. The fleet shares the process, so cfg's process metrics are
// not read; progress lines go to progress.
func Bench(ctx context.Context, cfg bench.Config, dataDir string, progress io.Writer, log *slog.Logger) (bench.Report, *bench.Hops, error) {
	if len(cfg.Fleet.Regions) == 0 {
		cfg.Fleet.Regions = stream.DefaultRegions
	}
	if dataDir == "" {
		dataDir = filepath.Join(os.TempDir(), fmt.Sprintf("telemetry-bench-%d", time.Now().UnixNano()))
		defer os.RemoveAll(dataDir)
	}
	p, err := New(ctx, Config{
		Regions: cfg.Fleet.Regions, Topology: stream.DefaultTopology(cfg.Fleet.Regions), MQTT: "127.0.0.1:0", DataDir: dataDir,
		MQTTPerAddress: max(broker.DefaultMaxConnsPerIP, cfg.Fleet.Devices+len(cfg.Fleet.Regions)),
		ClickHouse:     cfg.ClickHouse, StorageListen: "127.0.0.1:0", RequireStorage: true,
		Auth: MQTTAuth{FleetSecret: cfg.Fleet.FleetSecret},
		Say:  func(f string, a ...any) { fmt.Fprintf(progress, "bench: "+f+"\n", a...) },
	}, log)
	if err != nil {
		return bench.Report{}, nil, err
	}
	defer p.Close()
	// The bench stops when the pipeline does, and the pipeline when the
	// bench is done.
	pctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { err := p.Run(pctx); stop(); ran <- err }()
	rep, hops, err := func() (bench.Report, *bench.Hops, error) {
		select {
		case cfg.ClickHouse = <-p.StorageUp():
		case <-pctx.Done():
			return bench.Report{}, nil, errors.New("the pipeline stopped before storage was up")
		}
		cfg.Fleet.Broker = p.BrokerURL()
		cfg.NATS = map[string]string{}
		for _, r := range cfg.Fleet.Regions {
			cfg.NATS[r] = p.nats.URLAs(r, "dashboard")
		}
		cfg.Gatherer = p.gatherers
		return bench.Run(pctx, cfg, progress, log)
	}()
	stop()
	if perr := <-ran; perr != nil {
		err = errors.Join(err, fmt.Errorf("pipeline: %w", perr))
	}
	return rep, hops, err
}
