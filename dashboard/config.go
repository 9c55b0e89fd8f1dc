package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/stream"
)

// Defaults used for zero fields of Config.
const (
	DefaultNATSURL      = "nats://127.0.0.1:4222"
	DefaultDomain       = "us-east"
	DefaultListen       = "127.0.0.1:8080"
	DefaultPushInterval = time.Second
	DefaultClientQueue  = 8
	DefaultWriteTimeout = 5 * time.Second
	DefaultPongWait     = 30 * time.Second

	// Bounds of the dashboard's listener (docs/SECURITY.md). A
	// conference's audience may share one address (its Wi-Fi's NAT), so
	// the per-address bounds leave room for a room full of viewers.
	DefaultMaxViewers       = 2_000
	DefaultMaxViewersPerIP  = 200
	DefaultMaxConns         = 4_096
	DefaultMaxConnsPerIP    = 512
	DefaultWindow           = 5 * time.Second
	DefaultActiveWindow     = 30 * time.Second
	DefaultStoragePoll      = 2 * time.Second
	DefaultReplicationPoll  = stream.StatusInterval
	DefaultStorageOffReason = "no storage URL configured"
	DefaultFailoverAfter    = 10 * time.Second
)

// ListenerLimits are the default connection bounds of the dashboard's
// address, for a program that serves the dashboard's handler on a listener
// of its own (the demo).
var ListenerLimits = connlimit.Limits{Total: DefaultMaxConns, PerAddr: DefaultMaxConnsPerIP}

// maxPushInterval keeps pushes well inside the page's 10 s watchdog
// (STALE_MS in web/app.js), after which it reconnects.
const maxPushInterval = 5 * time.Second

// Config configures a Dashboard. Zero fields take the defaults above, so a
// test can set only what it cares about.
type Config struct {
	// NATSURL is the client URL of the server of the region the dashboard
	// is attached to.
	NATSURL string
	// Domain is that region's JetStream domain (the region name). Its
	// READINGS stream holds every region's readings.
	Domain string
	// Regions are shown in this order; readings of any other region are
	// only counted in Snapshot.OtherReadings.
	Regions []string

	// Listen is the HTTP address of the page, /ws, /api/snapshot, /metrics
	// and /healthz. Port 0 picks a free port (see Addr).
	Listen string
	// AllowedOrigins are the origins (scheme://host[:port]) of pages that
	// may open /ws besides the dashboard's own host: for a page served
	// behind another host name, such as a reverse proxy. Any other
	// browser origin is refused (403).
	AllowedOrigins []string
	// AllowedHosts are host names (no scheme, no port) the dashboard
	// answers to besides IP addresses, localhost and the hosts of
	// AllowedOrigins: a name on the venue network, a reverse proxy's.
	// A request to any other name is refused (403), so that a page whose
	// DNS name is rebound to this address cannot read the dashboard
	// (host.go).
	AllowedHosts []string

	// StorageURL is the base URL of the storage service's HTTP API, for
	// example http://127.0.0.1:8081. Empty means storage is off, and the
	// page says so with StorageOffReason.
	StorageURL string
	// StorageToken is storage's --api-token, sent as a bearer token: a
	// storage service on another machine answers /api/* only with it.
	StorageToken     string
	StorageOffReason string
	// StoragePoll is how often StorageURL/api/status is asked.
	StoragePoll time.Duration

	// PushInterval is how often a snapshot is pushed to websocket clients;
	// at most 5 s.
	PushInterval time.Duration
	// ClientQueue is how many snapshots may wait for one websocket client.
	// Policy when full: drop the client (disconnect it and count it in
	// telemetry_dashboard_ws_dropped_total{reason="queue_full"}). Snapshots
	// are complete states, so a browser that reconnects has lost nothing,
	// and one slow projector never holds up the others.
	ClientQueue int
	// WriteTimeout bounds one websocket write; a client that does not take
	// a snapshot within it is dropped.
	WriteTimeout time.Duration
	// PongWait is how long a websocket client may go without answering a
	// ping before it is dropped. Pings go out at 9/10 of it.
	PongWait time.Duration
	// MaxViewers bounds websocket clients (/ws) at once, MaxViewersPerIP
	// those from one client address (defaults DefaultMaxViewers,
	// DefaultMaxViewersPerIP): one more is answered 503 or 429, counted
	// in telemetry_dashboard_refused_total and logged rate limited.
	MaxViewers, MaxViewersPerIP int
	// MaxConns bounds TCP connections to the dashboard's address,
	// MaxConnsPerIP those from one address (defaults DefaultMaxConns,
	// DefaultMaxConnsPerIP); one more is closed as it is accepted.
	MaxConns, MaxConnsPerIP int

	// Window is the sliding window of readings per second, latency
	// percentiles and metric aggregates.
	Window time.Duration
	// ActiveWindow is how recently a device must have sent a reading to
	// count as active.
	ActiveWindow time.Duration

	// Gatherer, if set, is served at /metrics next to the dashboard's own
	// registry, so the demo can expose every component on one port.
	Gatherer prometheus.Gatherer

	// Presenter says that the presenter API (package scenario) is served
	// beside the page, as `telemetry demo --presenter-token` does: the
	// page then shows its presenter panel, which asks for the token. It
	// carries no secret. Scenario markers and ledgers are fed with
	// MarkScenario and ShowLedger.
	Presenter bool
	// Join says that phones may join (package join, /join beside the
	// page): the presenter panel then links the join view, /join/show,
	// with its QR code.
	Join bool

	// Replication, if set, is polled every ReplicationPoll for the
	// replication lag between regions, shown per region. The stream
	// package provides it. A link changing state is pushed at once.
	Replication func(ctx context.Context) ([]ReplicationLag, error)
	// ReplicationPoll is how often Replication is asked: the page shows a
	// cut or a heal within this, the status's own delay and a push.
	ReplicationPoll time.Duration
	// Alerts, if set, is polled with Replication for what is wrong with
	// each region's streams, by region (see RegionSnapshot.Alert).
	Alerts func(ctx context.Context) (map[string]string, error)

	// Fallbacks are the regions whose READINGS the dashboard follows, in
	// order, when its own region's server is gone; it moves back once that
	// answers again. FailoverAfter is how long a region must be unusable
	// before the move, and answer again before the move back.
	Fallbacks     []Fallback
	FailoverAfter time.Duration
}

// Fallback is another region's server the dashboard can read from.
type Fallback struct {
	Region  string // JetStream domain
	NATSURL string // client URL, credentials included
}

func (c Config) withDefaults() Config {
	if c.NATSURL == "" {
		c.NATSURL = DefaultNATSURL
	}
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if len(c.Regions) == 0 {
		c.Regions = slices.Clone(stream.DefaultRegions)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.StorageOffReason == "" {
		c.StorageOffReason = DefaultStorageOffReason
	}
	if c.StoragePoll == 0 {
		c.StoragePoll = DefaultStoragePoll
	}
	if c.ReplicationPoll == 0 {
		c.ReplicationPoll = DefaultReplicationPoll
	}
	if c.PushInterval == 0 {
		c.PushInterval = DefaultPushInterval
	}
	if c.ClientQueue == 0 {
		c.ClientQueue = DefaultClientQueue
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PongWait == 0 {
		c.PongWait = DefaultPongWait
	}
	for _, b := range []struct {
		v   *int
		def int
	}{{&c.MaxViewers, DefaultMaxViewers}, {&c.MaxViewersPerIP, DefaultMaxViewersPerIP}, {&c.MaxConns, DefaultMaxConns}, {&c.MaxConnsPerIP, DefaultMaxConnsPerIP}} {
		if *b.v == 0 {
			*b.v = b.def
		}
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.ActiveWindow == 0 {
		c.ActiveWindow = DefaultActiveWindow
	}
	if c.FailoverAfter == 0 {
		c.FailoverAfter = DefaultFailoverAfter
	}
	return c
}

// Validate checks the configuration, with defaults applied, without any I/O.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if _, err := url.Parse(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("NATS URL: %w", err))
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if !validRegion(r) {
			errs = append(errs, fmt.Errorf("region %q: want lower-case letters, digits and dashes", r))
		}
		if seen[r] {
			errs = append(errs, fmt.Errorf("region %q listed twice", r))
		}
		seen[r] = true
	}
	if !seen[c.Domain] {
		errs = append(errs, fmt.Errorf("domain %q is not one of the regions %v: the dashboard attaches to one region's server", c.Domain, c.Regions))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
	}
	for _, o := range c.AllowedOrigins {
		if err := validOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range c.AllowedHosts {
		if err := validHost(h); err != nil {
			errs = append(errs, err)
		}
	}
	if c.StorageURL != "" {
		u, err := url.Parse(c.StorageURL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("storage URL: %w", err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			errs = append(errs, fmt.Errorf("storage URL %q: want http://host:port", c.StorageURL))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"push interval", c.PushInterval},
		{"write timeout", c.WriteTimeout},
		{"pong wait", c.PongWait},
		{"window", c.Window},
		{"active window", c.ActiveWindow},
		{"storage poll", c.StoragePoll},
		{"replication poll", c.ReplicationPoll},
		{"failover after", c.FailoverAfter},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	if c.Window > 0 && c.Window < time.Second {
		errs = append(errs, fmt.Errorf("window %v: must be at least 1s (rates are counted per second)", c.Window))
	}
	if c.PushInterval > maxPushInterval {
		errs = append(errs, fmt.Errorf("push interval %v: at most %v, or the page takes the silence for a lost connection", c.PushInterval, maxPushInterval))
	}
	fallbacks := map[string]bool{}
	for _, f := range c.Fallbacks {
		if !validRegion(f.Region) || f.Region == c.Domain || f.NATSURL == "" {
			errs = append(errs, fmt.Errorf("fallback %q=%q: want another region than %s and its NATS URL", f.Region, f.NATSURL, c.Domain))
		}
		if fallbacks[f.Region] {
			errs = append(errs, fmt.Errorf("fallback region %q listed twice", f.Region))
		}
		fallbacks[f.Region] = true
	}
	if c.ClientQueue < 1 {
		errs = append(errs, fmt.Errorf("client queue %d: must be at least 1", c.ClientQueue))
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"max viewers", c.MaxViewers}, {"max viewers per address", c.MaxViewersPerIP}, {"max connections", c.MaxConns}, {"max connections per address", c.MaxConnsPerIP}} {
		if b.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must be at least 1 (0: the default)", b.name, b.v))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("dashboard config: %w", errors.Join(errs...))
	}
	return nil
}

func validRegion(r string) bool {
	if r == "" || len(r) > 63 {
		return false
	}
	for i, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}
