package stream

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// EmbeddedConfig describes the in-process NATS system of the demo and tests.
type EmbeddedConfig struct {
	Regions []string
	// Host the region servers listen on for clients.
	Host string
	// ClientPorts per region; a missing or zero entry picks a free port.
	ClientPorts map[string]int
	// DataDir holds each region's JetStream store in a subfolder.
	DataDir string
	// ReadyTimeout bounds how long a server may take to accept clients.
	ReadyTimeout time.Duration
	// MaxFailedLoginsPerIP failed logins from one address within
	// FailedLoginWindow make every server refuse that address's logins,
	// right password or not, until the window ends (0: the defaults of
	// connlimit, the embedded MQTT broker's too).
	MaxFailedLoginsPerIP int
	FailedLoginWindow    time.Duration
	// ClusterSize is how many servers each region runs (0 or 1: one).
	// Above 1 they are a cluster, <region>-1 to <region>-N, joined by
	// routes on free loopback ports, one JetStream domain, each server a
	// leaf node of the hub; ClientPorts then gives the first server's
	// port. Streams on them are replicated as the topology says
	// (Topology.Replicas), and a region's URL lists every server.
	ClusterSize int
}

// MaxClusterSize bounds EmbeddedConfig.ClusterSize: JetStream replicates
// a stream on at most five servers.
const MaxClusterSize = 5

// Validate checks the configuration without touching the network.
func (c EmbeddedConfig) Validate() error {
	if len(c.Regions) == 0 {
		return errors.New("embedded nats: no regions")
	}
	if c.DataDir == "" {
		return errors.New("embedded nats: data dir is required")
	}
	if c.ClusterSize < 0 || c.ClusterSize > MaxClusterSize {
		return fmt.Errorf("embedded nats: cluster of %d servers: want 1 to %d (JetStream's most replicas)", c.ClusterSize, MaxClusterSize)
	}
	return nil
}

// Embedded is a hub and one JetStream server per region, or a cluster of
// them (EmbeddedConfig.ClusterSize), in-process. Each region's leaf
// connection to the hub can be cut and healed (LeafLink).
//
// A region's servers can be stopped and started again (StopRegion,
// StartRegion, RestartRegion), and so can one server of a cluster
// (StopServer, StartServer), on the same client port and store, as a
// crashed and restarted server would be: its clients reconnect to the same
// URL and its file store keeps what it had acknowledged.
type Embedded struct {
	hub      *server.Server
	leafAddr string // the hub's leaf port, host:port
	links    map[string]*LeafLink
	order    []string
	log      *slog.Logger
	// refused counts refused logins by reason; failures holds back an
	// address that keeps failing, on every server's client port.
	refused  *connlimit.Tally
	failures *connlimit.Failures

	mu      sync.Mutex
	members map[string][]*member  // each region's servers, in order
	cut     map[string]bool       // regions whose leaf connection is cut
	gates   map[string]*loginGate // each server's, by server name
	conns   []*nats.Conn          // the stream manager's, closed with the servers
}

// member is one server of a region.
type member struct {
	name string         // the server's name: the region's, or <region>-<i> in a cluster
	s    *server.Server // nil: stopped
	opts *server.Options
	addr string // client host:port, kept across a stop
}

// StartEmbedded starts the hub and the regions from deploy/nats's files and
// waits until each accepts clients and every region has joined the hub.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	cfg.MaxFailedLoginsPerIP = cmp.Or(cfg.MaxFailedLoginsPerIP, connlimit.DefaultMaxFailedLoginsPerIP)
	cfg.FailedLoginWindow = cmp.Or(cfg.FailedLoginWindow, connlimit.DefaultFailedLoginWindow)
	confDir := filepath.Join(cfg.DataDir, "conf")
	if err := writeConfigs(confDir); err != nil {
		return nil, err
	}
	e := &Embedded{members: map[string][]*member{},
		links: map[string]*LeafLink{}, cut: map[string]bool{}, gates: map[string]*loginGate{}, order: cfg.Regions, log: log,
		refused: connlimit.NewTally("telemetry_nats_refused_total",
			"Logins to the embedded NATS servers refused, by reason: bad_login (unknown user, wrong password, a leaf user on a client port), failed_logins (the address failed too often within the window).",
			"NATS login refused", log, reasonBadLogin, reasonFailedLogins),
		failures: connlimit.NewFailures(cfg.MaxFailedLoginsPerIP, cfg.FailedLoginWindow)}
	leafPassword := rand.Text()

	hubOpts, err := loadConfig(confDir, "hub.conf", "")
	if err != nil {
		return nil, err
	}
	hubOpts.Host, hubOpts.Port, hubOpts.HTTPPort = "127.0.0.1", -1, 0
	hubOpts.LeafNode.Host, hubOpts.LeafNode.Port = "127.0.0.1", -1
	// A region cut off must not learn another way to the hub.
	hubOpts.LeafNode.NoAdvertise = true
	// The demo's leaf port takes no public password (hub.conf's is).
	hubOpts.LeafNode.Password = leafPassword
	hub, err := e.startServer(hubOpts, cfg.ReadyTimeout, log.With("nats", "hub"))
	if err != nil {
		return nil, err
	}
	e.hub = hub
	// The server writes the port it picked back into its options.
	leafAddr := fmt.Sprintf("127.0.0.1:%d", hubOpts.LeafNode.Port)
	e.leafAddr = leafAddr

	n := max(cfg.ClusterSize, 1)
	for _, region := range cfg.Regions {
		e.links[region] = &LeafLink{e: e, region: region}
		routes, err := clusterRoutes(n)
		if err != nil {
			e.Close()
			return nil, err
		}
		for i := range n {
			opts, err := loadConfig(confDir, "region.conf", region)
			if err != nil {
				e.Close()
				return nil, err
			}
			opts.Host, opts.Port = cfg.Host, -1
			if p := cfg.ClientPorts[region]; p != 0 && i == 0 {
				opts.Port = p
			}
			opts.HTTPPort = 0
			opts.StoreDir = filepath.Join(cfg.DataDir, region)
			if n > 1 {
				opts.ServerName = fmt.Sprintf("%s-%d", region, i+1)
				opts.StoreDir = filepath.Join(cfg.DataDir, region, opts.ServerName)
				routes.join(opts, i, region)
			}
			opts.LeafNode.ReconnectInterval = 250 * time.Millisecond
			for _, remote := range opts.LeafNode.Remotes {
				for _, u := range remote.URLs {
					u.Host = leafAddr
					u.User = url.UserPassword(hubOpts.LeafNode.Username, leafPassword)
				}
			}
			s, err := e.startServer(opts, cfg.ReadyTimeout, log.With("nats", opts.ServerName))
			if err != nil {
				e.Close()
				return nil, err
			}
			// Keep the address picked: a restart listens there again,
			// where the region's clients reconnect.
			e.members[region] = append(e.members[region], &member{name: opts.ServerName, s: s, opts: opts, addr: s.Addr().String()})
		}
	}
	if err := e.waitLeafs(cfg.ReadyTimeout); err != nil {
		e.Close()
		return nil, err
	}
	if n > 1 {
		if err := e.waitMetaLeaders(cfg.ReadyTimeout); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// routes are the cluster ports of a region's servers, picked free on
// loopback, and the password of the routes between them.
type routes struct {
	ports    []int
	password string
}

func clusterRoutes(n int) (*routes, error) {
	r := &routes{password: rand.Text()}
	if n == 1 {
		return r, nil
	}
	for range n {
		// A port picked here may be taken before the server binds it;
		// the demo then fails to start and says so.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a cluster port: %w", err)
		}
		r.ports = append(r.ports, l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	return r, nil
}

// join makes opts server i of the region's cluster, routed to the others.
func (r *routes) join(opts *server.Options, i int, region string) {
	opts.Cluster.Name = region
	opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", r.ports[i]
	opts.Cluster.Username, opts.Cluster.Password = "route", r.password
	opts.Routes = nil
	for j, p := range r.ports {
		if j != i {
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", User: url.UserPassword("route", r.password), Host: fmt.Sprintf("127.0.0.1:%d", p)})
		}
	}
}

// waitMetaLeaders waits until every region's cluster has elected the
// leader of its JetStream meta group: streams cannot be made before.
func (e *Embedded) waitMetaLeaders(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, region := range e.order {
		for {
			led := false
			for _, m := range e.members[region] {
				led = led || m.s.JetStreamIsLeader()
			}
			if led {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the servers of %s elected no JetStream leader within %s", region, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// writeConfigs copies the embedded deploy/nats files into dir, where
// nats-server's parser can resolve their includes.
func writeConfigs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating nats config dir: %w", err)
	}
	entries, err := deploy.NATS.ReadDir("nats")
	if err != nil {
		return fmt.Errorf("reading embedded nats configs: %w", err)
	}
	for _, e := range entries {
		b, err := deploy.NATS.ReadFile("nats/" + e.Name())
		if err != nil {
			return fmt.Errorf("reading embedded %s: %w", e.Name(), err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", e.Name(), err)
		}
	}
	return nil
}

// loadConfig parses name from dir; with a region, it first defines the
// REGION variable that region.conf refers to, as compose does through the
// environment.
func loadConfig(dir, name, region string) (*server.Options, error) {
	path := filepath.Join(dir, name)
	if region != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		path = filepath.Join(dir, "region-"+region+".conf")
		// The hub's address is set below, on the parsed options.
		b = append([]byte(fmt.Sprintf("REGION = %q\nHUB_LEAF_URL = \"nats-leaf://leaf:leaf@127.0.0.1:7422\"\n", region)), b...)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading nats config %s: %w", path, err)
	}
	return opts, nil
}

func (e *Embedded) startServer(opts *server.Options, timeout time.Duration, log *slog.Logger) (*server.Server, error) {
	opts.NoSigs = true
	if os.Getenv("STREAM_TRACE") != "" {
		opts.Trace, opts.Debug = true, true
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring nats-server %s: %w", opts.ServerName, err)
	}
	// The gate goes in after NewServer has built nats-server's own user
	// table, before any client can connect: a configuration reload (a
	// region's cut) looks every client's user up in that table, and
	// without one it would close every client as one whose user is gone.
	gate := newLoginGate(opts, e.failures, e.refused)
	gate.serve(s)
	e.gates[opts.ServerName] = gate
	s.SetLoggerV2(&slogAdapter{log: log, refused: e.refused, failures: e.failures}, opts.Debug, opts.Trace, false)
	go s.Start()
	if !s.ReadyForConnections(timeout) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server %s not ready after %s", opts.ServerName, timeout)
	}
	return s, nil
}

func (e *Embedded) waitLeafs(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	servers := 0
	for _, ms := range e.members {
		servers += len(ms)
	}
	for e.hub.NumLeafNodes() < servers {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d region servers joined the hub after %s", e.hub.NumLeafNodes(), servers, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Account is the NATS account of the pipeline's users and streams
// (deploy/nats/accounts.conf).
const Account = "TELEMETRY"

// Demo credentials of the TELEMETRY account, from deploy/nats/accounts.conf:
// DemoUser manages streams; each service has a user of its own.
const (
	DemoUser     = "telemetry"
	DemoPassword = "telemetry"
)

// DemoPasswordFor is the demo password of user in deploy/nats/accounts.conf.
func DemoPasswordFor(user string) string {
	switch {
	case strings.HasPrefix(user, "ingest-"):
		return "ingest"
	default:
		return user
	}
}

// IngestUser is the NATS user of region's ingest.
func IngestUser(region string) string { return "ingest-" + region }

// URL is the client URL of region's server as the stream manager (setup,
// tests).
func (e *Embedded) URL(region string) string { return e.URLAs(region, DemoUser) }

// URLAs is the client URL of region's servers as user, with its demo
// password: in a cluster, every server's, comma-separated, as nats.go
// takes them. It stays the same while a server is stopped and after it
// restarts.
func (e *Embedded) URLAs(region, user string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var urls []string
	for _, m := range e.members[region] {
		urls = append(urls, fmt.Sprintf("nats://%s:%s@%s", user, DemoPasswordFor(user), m.addr))
	}
	return strings.Join(urls, ",")
}

// StopRegion shuts every server of region down, as a crash would (its
// store is file storage and keeps what it acknowledged), and waits until
// they are down. Their clients lose them; their ports stay reserved for
// StartRegion. Stopping a stopped region does nothing.
func (e *Embedded) StopRegion(region string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ms, ok := e.members[region]
	if !ok {
		return fmt.Errorf("no region %q", region)
	}
	for _, m := range ms {
		m.stop()
	}
	return nil
}

func (m *member) stop() {
	if m.s != nil {
		m.s.Shutdown()
		m.s.WaitForShutdown()
		m.s = nil
	}
}

// StartRegion starts a stopped region's servers again on the same client
// ports and stores, and waits until each accepts clients and has joined
// the hub; their clients reconnect by themselves. A region whose server was
// shut down directly (Server(region).Shutdown()) can be started too.
// Starting a running region does nothing.
func (e *Embedded) StartRegion(region string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ms, ok := e.members[region]
	if !ok {
		return fmt.Errorf("no region %q", region)
	}
	for _, m := range ms {
		if err := e.start(region, m); err != nil {
			return err
		}
	}
	return nil
}

// StopServer shuts one server of a region's cluster down by name
// (<region>-<i>), as a crash would; the others go on, and a stream it led
// elects another leader. Stopping a stopped server does nothing.
func (e *Embedded) StopServer(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, m := e.member(name)
	if m == nil {
		return fmt.Errorf("no server %q", name)
	}
	m.stop()
	return nil
}

// StartServer starts a server StopServer stopped, on its port and store;
// it catches up with the rest of its cluster by itself.
func (e *Embedded) StartServer(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	region, m := e.member(name)
	if m == nil {
		return fmt.Errorf("no server %q", name)
	}
	return e.start(region, m)
}

func (e *Embedded) member(name string) (region string, m *member) {
	for r, ms := range e.members {
		for _, m := range ms {
			if m.name == name {
				return r, m
			}
		}
	}
	return "", nil
}

// start starts m again, unless it runs, and waits until it has joined the
// hub (unless the region is cut). The caller holds e.mu.
func (e *Embedded) start(region string, m *member) error {
	if m.s != nil {
		if m.s.Running() {
			return nil
		}
		m.s.WaitForShutdown()
	}
	const timeout = 30 * time.Second
	deadline := time.Now().Add(timeout)
	opts := m.opts.Clone()
	_, port, err := net.SplitHostPort(m.addr)
	if err != nil {
		return fmt.Errorf("starting %s again: %w", m.name, err)
	}
	if opts.Port, err = strconv.Atoi(port); err != nil {
		return fmt.Errorf("starting %s again: port %q: %w", m.name, port, err)
	}
	setLeafDisabled(opts, e.cut[region])
	ns, err := e.startServer(opts, timeout, e.log.With("nats", m.name))
	if err != nil {
		return fmt.Errorf("starting %s again: %w", m.name, err)
	}
	m.s, m.opts = ns, opts
	// The leaf connection comes back within its reconnect interval,
	// unless the region's link is cut.
	if e.cut[region] {
		return nil
	}
	for ns.NumLeafNodes() == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s started again but did not join the hub within %s", m.name, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// RestartRegion shuts region's servers down and starts them again on the
// same ports and stores, as a crash-and-restart would; their clients
// reconnect. It also starts a stopped region.
func (e *Embedded) RestartRegion(region string) error {
	if err := e.StopRegion(region); err != nil {
		return err
	}
	return e.StartRegion(region)
}

// Server is region's first running nats-server, for tests that inspect
// it; nil while the region is stopped (StopRegion).
func (e *Embedded) Server(region string) *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.members[region] {
		if m.s != nil {
			return m.s
		}
	}
	return nil
}

// ServerNames lists region's servers by name, in order: the region's own
// name for one server, <region>-1 to <region>-N for a cluster.
func (e *Embedded) ServerNames(region string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.members[region] {
		out = append(out, m.name)
	}
	return out
}

// StreamLeader is the name of the running server of region that leads
// stream in the TELEMETRY account, or "" while none does (an election).
func (e *Embedded) StreamLeader(region, stream string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.members[region] {
		if m.s != nil && m.s.Running() && m.s.JetStreamIsStreamLeader(Account, stream) {
			return m.name
		}
	}
	return ""
}

// Link is region's link to the hub; nil for an unknown region.
func (e *Embedded) Link(region string) *LeafLink { return e.links[region] }

// LeafLink is a region's leaf connection to the hub. Cut closes it and
// keeps it closed until Heal, while the region's server, ingest and devices
// keep running: the region goes on accepting readings locally and its
// sources catch up after the heal. It is nats-server's own switch, a leaf
// remote's "disabled" applied by a configuration reload; a region started
// again while cut stays cut.
type LeafLink struct {
	e      *Embedded
	region string
}

// Cut severs the link until Heal.
func (l *LeafLink) Cut() { l.e.setCut(l.region, true) }

// Heal lets the region connect to the hub again.
func (l *LeafLink) Heal() { l.e.setCut(l.region, false) }

// IsCut reports whether the link is cut.
func (l *LeafLink) IsCut() bool {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	return l.e.cut[l.region]
}

func (e *Embedded) setCut(region string, cut bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cut[region] == cut {
		return
	}
	e.cut[region] = cut
	for _, m := range e.members[region] {
		if m.s == nil || !m.s.Running() {
			continue
		}
		opts := m.opts.Clone()
		setLeafDisabled(opts, cut)
		// A reload checks every client's login again, through the gate:
		// the clients are in already, so no throttle applies to them.
		gate := e.gates[m.name]
		gate.rechecking.Store(true)
		err := m.s.ReloadOptions(opts)
		gate.rechecking.Store(false)
		if err != nil {
			e.log.Error("cutting or healing a region's link", "server", m.name, "cut", cut, "err", err)
			return
		}
		m.opts = opts
	}
	if cut {
		e.log.Warn("region link cut", "region", region)
	} else {
		e.log.Info("region link healed", "region", region)
	}
}

// setLeafDisabled switches every leaf remote of opts off or on, on copies
// of the remotes: Options.Clone shares them with the running server's
// options (nats-server v2.15: "FIXME(dlc) - clone leaf node stuff"), and a
// reload that finds no difference does nothing.
func setLeafDisabled(opts *server.Options, disabled bool) {
	remotes := make([]*server.RemoteLeafOpts, len(opts.LeafNode.Remotes))
	for i, r := range opts.LeafNode.Remotes {
		c := *r
		c.Disabled = disabled
		remotes[i] = &c
	}
	opts.LeafNode.Remotes = remotes
}

// Regions lists the regions in their configured order.
func (e *Embedded) Regions() []string { return e.order }

// Apply connects to each region and applies topo to them all.
func (e *Embedded) Apply(ctx context.Context, topo Topology) error {
	urls := map[string]string{}
	for _, region := range e.order {
		urls[region] = e.URL(region)
	}
	return ApplyURLs(ctx, urls, topo)
}

// ApplyRegion dials url, which serves region's domain, and applies topo,
// a topology of that one region, there.
func ApplyRegion(ctx context.Context, url, region string, topo Topology) error {
	return ApplyURLs(ctx, map[string]string{region: url}, topo)
}

// ApplyURLs dials every region's URL (region -> URL of a server of that
// region's domain) and applies topo to them all.
func ApplyURLs(ctx context.Context, urls map[string]string, topo Topology) error {
	rs := Regions{}
	for _, region := range topo.Regions {
		url, ok := urls[region]
		if !ok {
			return fmt.Errorf("applying the topology: no NATS URL for region %s: add %s=nats://host:port to --nats", region, region)
		}
		nc, err := nats.Connect(url, nats.Name("telemetry-stream-setup"))
		if err != nil {
			return fmt.Errorf("connecting to %s at %s: %w", region, url, err)
		}
		defer nc.Close()
		if rs[region], err = jetstream.NewWithDomain(nc, region); err != nil {
			return fmt.Errorf("jetstream in %s: %w", region, err)
		}
	}
	return topo.Apply(ctx, rs)
}

// NewMender returns a Mender of topo's sources in these regions, changing
// streams as the stream manager over connections of its own that follow
// the regions' servers through restarts and are closed with them.
func (e *Embedded) NewMender(topo Topology, status func(context.Context) []RegionStatus, log *slog.Logger) (*Mender, error) {
	urls := map[string]string{}
	for _, r := range e.order {
		urls[r] = e.URL(r)
	}
	admin, conns, err := Connect(urls, e.order, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connecting the mender: %w", err)
	}
	e.mu.Lock()
	e.conns = append(e.conns, conns...)
	e.mu.Unlock()
	return NewMender(topo, admin, status, log), nil
}

// Close shuts every server and link down. It is safe to call twice.
func (e *Embedded) Close() error {
	e.mu.Lock()
	for _, nc := range e.conns {
		nc.Close()
	}
	for _, ms := range e.members {
		for _, m := range ms {
			m.stop()
		}
	}
	e.mu.Unlock()
	if e.hub != nil {
		e.hub.Shutdown()
		e.hub.WaitForShutdown()
	}
	return nil
}

// Refused counts the logins the embedded servers refused, as
// telemetry_nats_refused_total: a collector for the demo's /metrics.
func (e *Embedded) Refused() prometheus.Collector { return e.refused }

// slogAdapter sends nats-server's log lines to slog. Failed logins, a line
// each in nats-server, are not: a client's was counted by the loginGate, a
// leaf connection's (at the hub) is counted here and against its address.
type slogAdapter struct {
	log      *slog.Logger
	refused  *connlimit.Tally
	failures *connlimit.Failures
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }

// clusterChatter are nats-server's messages of a region's cluster coming
// together or missing a server it knows: its servers start one after
// another, and a server stopped on purpose (StopServer, the stop-leader
// scenario) is dialled again every second until it is back. The
// scenario's own steps say what happened; these would bury the console.
var clusterChatter = []string{
	"Error trying to connect to route",
	"Waiting for routing to be established",
	"JetStream has not established contact with a meta leader",
	"Metalayer blocking snapshot",
}

func isClusterChatter(msg string) bool {
	for _, p := range clusterChatter {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func (a *slogAdapter) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if isClusterChatter(msg) {
		a.log.Debug(msg)
		return
	}
	if strings.HasPrefix(msg, "Plaintext passwords detected") {
		// The embedded servers load deploy/nats/accounts.conf, whose
		// passwords are the public demo defaults on purpose (README,
		// Security); said once per server at start, it only buries the
		// console's own lines.
		a.log.Debug(msg)
		return
	}
	a.log.Warn(msg)
}
func (a *slogAdapter) Fatalf(format string, v ...any) { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	// "<ip>:<port> - cid:<n> - authentication error[ - user <u>]", lid:
	// for a leaf connection.
	if a.refused != nil && strings.Contains(msg, " - authentication error") {
		from, rest, _ := strings.Cut(msg, " - ")
		if strings.HasPrefix(rest, "lid:") {
			host := connlimit.HostOf(from)
			a.failures.Add(host, time.Now())
			a.refused.Add(reasonBadLogin, host)
		}
		return
	}
	if isClusterChatter(msg) {
		a.log.Debug(msg)
		return
	}
	a.log.Error(msg)
}
func (a *slogAdapter) Debugf(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
