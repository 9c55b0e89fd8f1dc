package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/redact"
)

//go:embed web
var webFiles embed.FS

// ErrRunning is returned by Run when the dashboard is already running or
// has been closed.
var ErrRunning = errors.New("dashboard: already running or closed")

// Dashboard serves the live view of the pipeline. Build it with New, start
// it with Run, stop it by cancelling Run's context or with Close.
type Dashboard struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry
	agg *aggregator
	hub *hub
	ln  net.Listener
	srv *http.Server
	mux *http.ServeMux
	// handler is mux behind the Host check (host.go): what is served.
	handler http.Handler
	hosts   hostAllowList
	// httpc asks the storage service for history.
	httpc *http.Client
	m     metrics
	done  chan struct{} // closed when Run returns

	upgrader websocket.Upgrader // of /ws, with its Origin check (origin.go)
	viewers  *connlimit.Tracker // websocket clients, against MaxViewers and MaxViewersPerIP
	refused  *connlimit.Tally   // connections and requests refused, by reason

	readingsErr atomic.Pointer[string]   // nil while the READINGS consumer is fine
	feedCur     atomic.Pointer[feedSite] // whose READINGS is read, and through which connection (consume.go)
	feedMu      sync.Mutex               // serialises setFeed
	scenarios   scenarioLog              // fed by MarkScenario and ShowLedger
	recent      recentRates              // the last minutes of rates, for /api/recent

	mu          sync.Mutex
	nc          *nats.Conn
	storage     StorageState
	replication []ReplicationLag
	alerts      map[string]string // by region, from Config.Alerts
	beats       ingestBeats       // ingest's heartbeats (ingest.go)
	latest      []byte            // the last pushed snapshot, for new websocket clients
	pushNow     chan struct{}     // a push before the next tick: a link changed state
	seq         uint64
	started     bool
	closed      bool
	cancel      context.CancelFunc
}

type metrics struct {
	readings    map[string]prometheus.Counter  // by region
	latency     map[string]prometheus.Observer // by region
	other       prometheus.Counter
	undecodable prometheus.Counter
	failovers   prometheus.Counter
	deadLetters *prometheus.CounterVec
	pushed      prometheus.Counter
	storageUp   prometheus.Gauge
}

// New checks cfg, binds the listen address (so a busy port fails here, and
// Addr is known before Run) and prepares the dashboard. It does not connect
// to NATS; Run does. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Dashboard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "dashboard")
	reg := prometheus.NewRegistry()
	d := &Dashboard{
		cfg:     cfg,
		log:     logger,
		reg:     reg,
		agg:     newAggregator(cfg.Regions, cfg.Window, cfg.ActiveWindow, time.Now()),
		hub:     newHub(cfg, logger, reg),
		done:    make(chan struct{}),
		httpc:   &http.Client{Timeout: historyTimeout},
		pushNow: make(chan struct{}, 1),
	}
	d.refused = connlimit.NewTally("telemetry_dashboard_refused_total",
		"Connections, requests and websocket upgrades the dashboard refused, by reason: too_many and too_many_from_address (connections), viewers and viewers_from_address (websocket clients), foreign_origin (websocket upgrades), foreign_host (requests to a name the dashboard does not answer to).",
		"dashboard refused a client", logger,
		connlimit.ReasonTooMany, connlimit.ReasonTooManyFromAddress, refusedViewers, refusedViewersFromIP, refusedForeignOrigin, refusedForeignHost)
	reg.MustRegister(d.refused)
	d.viewers = connlimit.NewTracker(connlimit.Limits{Total: cfg.MaxViewers, PerAddr: cfg.MaxViewersPerIP})
	d.upgrader = newUpgrader(cfg, d)
	d.hosts = newHostAllowList(cfg)
	d.setReadingsErr("starting")
	d.storage = StorageState{State: StorageUnknown}
	if cfg.StorageURL == "" {
		d.storage = StorageState{State: StorageOff, Reason: cfg.StorageOffReason}
	}
	d.registerMetrics()

	d.mux = http.NewServeMux()
	d.mux.HandleFunc("GET /api/snapshot", d.serveSnapshot)
	d.mux.HandleFunc("GET /ws", d.serveWS)
	d.mux.HandleFunc("GET /healthz", d.serveHealth)
	d.mux.HandleFunc("GET /api/history", d.serveHistory)
	d.mux.HandleFunc("GET /api/recent", d.serveRecent)
	var gatherers prometheus.Gatherers = []prometheus.Gatherer{reg}
	if cfg.Gatherer != nil {
		gatherers = append(gatherers, cfg.Gatherer)
	}
	d.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{}))
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		return nil, fmt.Errorf("dashboard: embedded page: %w", err)
	}
	files := http.FileServerFS(web)
	d.mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page changes with the binary; never let a browser keep an
		// old one across a restart.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	d.handler = d.CheckHost(d.mux)
	d.srv = &http.Server{
		Handler:           d.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("dashboard: listening on %s: %w", cfg.Listen, err)
	}
	d.ln = connlimit.Listen(ln, connlimit.Limits{Total: cfg.MaxConns, PerAddr: cfg.MaxConnsPerIP}, d.refused)
	return d, nil
}

func (d *Dashboard) registerMetrics() {
	d.m = metrics{
		readings: map[string]prometheus.Counter{},
		latency:  map[string]prometheus.Observer{},
		other: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_dashboard_other_readings_total",
			Help: "Readings of regions the dashboard is not configured to show.",
		}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_dashboard_undecodable_total",
			Help: "READINGS messages whose subject or payload did not parse.",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_dashboard_failovers_total",
			Help: "Changes of the region whose READINGS the dashboard reads: to a fallback, or back home.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemetry_dashboard_deadletters_total",
			Help: "Dead letters read from each region's DEADLETTER stream, by reason.",
		}, []string{"region", "reason"}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_dashboard_snapshots_pushed_total",
			Help: "Snapshots built and pushed to websocket clients.",
		}),
		storageUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemetry_dashboard_storage_up",
			Help: "1 when the storage service answered its last status poll, 0 otherwise or when storage is off.",
		}),
	}
	readings := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "telemetry_dashboard_readings_total",
		Help: "Readings seen on READINGS, by the region they come from.",
	}, []string{"region"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "telemetry_dashboard_end_to_end_latency_seconds",
		Help:    "Arrival at the dashboard minus the ts the device stamped, by region.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"region"})
	for _, r := range d.cfg.Regions {
		d.m.readings[r] = readings.WithLabelValues(r)
		d.m.latency[r] = latency.WithLabelValues(r)
	}
	natsUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemetry_dashboard_nats_connected",
		Help: "1 while the dashboard is connected to its region's NATS server.",
	}, func() float64 {
		if nc := d.conn(); nc != nil && nc.IsConnected() {
			return 1
		}
		return 0
	})
	d.reg.MustRegister(readings, latency, natsUp, d.m.other, d.m.undecodable, d.m.failovers,
		d.m.deadLetters, d.m.pushed, d.m.storageUp)
}

// Addr is the address the HTTP server listens on.
func (d *Dashboard) Addr() string { return d.ln.Addr().String() }

// Handler serves the page, /ws, /api/snapshot, /metrics and /healthz, for
// mounting elsewhere; Run serves it on Config.Listen. It checks every
// request's Host first (CheckHost).
func (d *Dashboard) Handler() http.Handler { return d.handler }

// Handle serves h at pattern beside the page, behind the same Host check
// (a presenter API, for one). Call it before Run.
func (d *Dashboard) Handle(pattern string, h http.Handler) { d.mux.Handle(pattern, h) }

// Registry holds the dashboard's own metrics.
func (d *Dashboard) Registry() *prometheus.Registry { return d.reg }

// Run connects to NATS, consumes, polls and serves until ctx is cancelled
// or Close is called, then disconnects the websocket clients, stops the
// consumers and returns. It returns an error only if serving failed.
func (d *Dashboard) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.started || d.closed {
		d.mu.Unlock()
		return ErrRunning
	}
	d.started = true
	ctx, d.cancel = context.WithCancel(ctx)
	d.mu.Unlock()
	defer close(d.done)

	nc, err := d.connect()
	if err != nil {
		d.cancel()
		d.ln.Close()
		return err
	}
	defer nc.Close()

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := d.srv.Serve(d.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("dashboard: serving http on %s: %w", d.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.srv.Shutdown(sctx) // hijacked websocket connections are the hub's
		d.hub.close()
		return nil
	})
	g.Go(func() error { d.push(ctx); return nil })
	d.setFeed(d.cfg.Domain, nc)
	g.Go(func() error { d.consumeReadings(ctx, nc); return nil })
	g.Go(func() error { d.hearIngest(ctx); return nil })
	for _, region := range d.cfg.Regions {
		g.Go(func() error { d.consumeDeadLetters(ctx, region); return nil })
	}
	if d.cfg.StorageURL != "" {
		g.Go(func() error { d.pollStorage(ctx); return nil })
	}
	if d.cfg.Replication != nil || d.cfg.Alerts != nil {
		g.Go(func() error { d.pollReplication(ctx); return nil })
	}
	d.log.Info("dashboard serving", "addr", "http://"+d.Addr(), "nats", d.cfg.NATSURL, "domain", d.cfg.Domain)
	return g.Wait()
}

// Close stops a running dashboard and waits for Run to return, or releases
// the listener of one that never ran. It is safe to call more than once.
func (d *Dashboard) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	started, cancel := d.started, d.cancel
	d.mu.Unlock()
	if !started {
		return d.ln.Close()
	}
	if cancel != nil {
		cancel()
	}
	<-d.done
	return nil
}

// connect dials NATS without waiting for it: the page is useful (it says
// "NATS disconnected") while the server is still starting or gone.
func (d *Dashboard) connect() (*nats.Conn, error) {
	nc, err := nats.Connect(d.cfg.NATSURL,
		nats.Name("telemetry-dashboard"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			d.log.Warn("NATS disconnected", "url", redact.URL(d.cfg.NATSURL), "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			d.log.Info("NATS reconnected", "url", redact.URL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			d.log.Debug("NATS async error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dashboard: connecting to NATS at %s: %w", d.cfg.NATSURL, err)
	}
	d.mu.Lock()
	d.nc = nc
	d.mu.Unlock()
	return nc, nil
}

func (d *Dashboard) conn() *nats.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nc
}

// push builds a snapshot every PushInterval, and when asked on pushNow,
// and hands it to the hub.
func (d *Dashboard) push(ctx context.Context) {
	t := time.NewTicker(d.cfg.PushInterval)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		case <-d.pushNow:
			now = time.Now()
		}
		d.mu.Lock()
		d.seq++
		seq := d.seq
		d.mu.Unlock()
		snap := d.snapshot(now, seq)
		d.recent.add(&snap)
		b, err := json.Marshal(snap)
		if err != nil {
			d.log.Error("encoding snapshot", "err", err)
			continue
		}
		d.mu.Lock()
		d.latest = b
		d.mu.Unlock()
		d.hub.broadcast(b)
		d.m.pushed.Inc()
	}
}

// snapshot assembles the state as of now.
func (d *Dashboard) snapshot(now time.Time, seq uint64) Snapshot {
	s := Snapshot{Seq: seq, Time: now.UTC(), Domain: d.feed(), HomeDomain: d.cfg.Domain, Replication: []ReplicationLag{}}
	d.agg.snapshot(now, &s)
	s.Clients = d.hub.count()
	s.Presenter = d.cfg.Presenter
	s.Join = d.cfg.Join
	d.scenarios.fill(&s)

	d.mu.Lock()
	defer d.mu.Unlock()
	s.Storage = d.storage
	s.Replication = append(s.Replication, d.replication...)
	d.fillIngest(now, &s)
	s.NATS = NATSState{Status: "NOT STARTED", Readings: "not started"}
	// Failed over, the connection that matters is the fallback's.
	nc := d.nc
	if fc := d.feedConn(); fc != nil {
		nc = fc
	}
	if nc != nil {
		s.NATS.Connected = nc.IsConnected()
		s.NATS.Status = nc.Status().String()
		s.NATS.Server = nc.ConnectedUrlRedacted()
		if err := nc.LastError(); err != nil {
			s.NATS.Error = err.Error()
		}
		s.NATS.Readings = d.readingsState()
	}
	return s
}

// Snapshot returns the current state, as /api/snapshot serves it.
func (d *Dashboard) Snapshot() Snapshot {
	d.mu.Lock()
	seq := d.seq
	d.mu.Unlock()
	return d.snapshot(time.Now(), seq)
}

func (d *Dashboard) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	b, err := json.Marshal(d.Snapshot())
	if err != nil {
		http.Error(w, "encoding snapshot: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// HTTP bounds of the dashboard's server (docs/SECURITY.md); requests
// carry no body larger than a scenario's JSON.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
)

// Reasons of telemetry_dashboard_refused_total beside connlimit's.
const (
	refusedViewers       = "viewers"              // MaxViewers websocket clients
	refusedViewersFromIP = "viewers_from_address" // MaxViewersPerIP from the client's address
	refusedForeignOrigin = "foreign_origin"       // a websocket from another site's page
	refusedForeignHost   = "foreign_host"         // a request to a name not allowed: DNS rebinding (host.go)
)

func (d *Dashboard) serveWS(w http.ResponseWriter, r *http.Request) {
	host := connlimit.HostOf(r.RemoteAddr)
	switch d.viewers.Acquire(host) {
	case connlimit.ReasonTooMany:
		d.refused.Add(refusedViewers, host)
		http.Error(w, fmt.Sprintf("the dashboard has its most viewers (%d); try again later", d.cfg.MaxViewers), http.StatusServiceUnavailable)
		return
	case connlimit.ReasonTooManyFromAddress:
		d.refused.Add(refusedViewersFromIP, host)
		http.Error(w, fmt.Sprintf("too many viewers from your address (at most %d)", d.cfg.MaxViewersPerIP), http.StatusTooManyRequests)
		return
	}
	conn, err := d.upgrader.Upgrade(w, r, nil) // answers the client itself on error (403 for a foreign Origin)
	if err != nil {
		d.viewers.Release(host)
		d.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	d.mu.Lock()
	first := d.latest
	d.mu.Unlock()
	if !d.hub.add(conn, first, func() { d.viewers.Release(host) }) {
		conn.Close()
		d.viewers.Release(host)
	}
}

// serveHealth answers 200 while the NATS connection READINGS is read
// through is up (without it the dashboard shows nothing live) and no
// region has an alert (its ingest cannot publish, or its READINGS drops
// readings not stored), 503 with what is wrong otherwise. Failed over,
// that is the fallback's connection, and readings must be flowing from it;
// the body says which region it reads from.
func (d *Dashboard) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	f := d.feedCur.Load()
	if f != nil && f.region != d.cfg.Domain {
		if f.nc.IsConnected() && d.readingsErr.Load() == nil {
			fmt.Fprintf(w, "ok: failed over to %s (home %s unreachable)\n", f.region, d.cfg.Domain)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "nats: failed over to %s (home %s unreachable), but %s: %s\n", f.region, d.cfg.Domain, f.nc.Status(), d.readingsState())
		return
	}
	nc := d.conn()
	switch {
	case nc == nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "nats: not connected yet to %s\n", d.cfg.NATSURL)
	case !nc.IsConnected():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "nats: %s, not connected to %s", nc.Status(), d.cfg.NATSURL)
		if err := nc.LastError(); err != nil {
			fmt.Fprintf(w, ": %v", err)
		}
		fmt.Fprintln(w)
	default:
		if alerts := d.regionAlerts(time.Now()); len(alerts) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, a := range alerts {
				fmt.Fprintln(w, a)
			}
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// regionAlerts lists what is wrong with the regions, in Config.Regions
// order, as their cards say it.
func (d *Dashboard) regionAlerts(now time.Time) []string {
	s := Snapshot{}
	for _, r := range d.cfg.Regions {
		s.Regions = append(s.Regions, RegionSnapshot{Region: r})
	}
	d.mu.Lock()
	d.fillIngest(now, &s)
	d.mu.Unlock()
	var out []string
	for _, r := range s.Regions {
		if r.Alert != "" {
			out = append(out, r.Region+": "+r.Alert)
		}
	}
	return out
}

// readingsState is "ok" or what is wrong with the READINGS consumer.
func (d *Dashboard) readingsState() string {
	if e := d.readingsErr.Load(); e != nil {
		return *e
	}
	return "ok"
}
