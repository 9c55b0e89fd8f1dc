// Package broker runs the embedded MQTT broker (mochi-mqtt) that
// `telemetry demo` puts in front of ingest, so that the demo needs no
// Mosquitto. Devices publish to it; each region's ingest subscribes to it.
// Compose and the integration tests use real Mosquitto instead; both apply
// the same users and ACL, from the same files (deploy/mosquitto/passwd and
// acl): no anonymous access, a device publishes only to its own topic and
// reads nothing, ingest reads every reading.
package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// maxInflight is the most QoS 1 and 2 messages mochi holds in flight per
// client; beyond it, it drops messages to that client silently (counted in
// telemetry_broker_inflight_dropped_total). 65535 is the most MQTT packet
// ids allow; the flow hook (flow.go) holds publishers back long before a
// subscriber gets there.
const maxInflight = 65535

// Defaults for zero fields of Config.
const (
	// DefaultMaxPendingWrites is each client's outbound queue. mochi
	// allocates it, a pointer per slot, for every connection as it is
	// accepted, devices and ingest alike: 64 KiB slots cost 512 KiB per
	// device. 2048 (16 KiB per device) is room for twice what the flow
	// hook lets a subscriber have in flight, 1,024: ingest's own window
	// (ingest.DefaultMaxInflight). Measured against 4096 (2026-12-07,
	// alternated, docs/BENCH.md): 148 MiB less for the demo with 10,000
	// devices, 100-150 MiB less at the broker's ceiling with 1,000, and
	// the same share of the ceiling (medians 55.5 % and 54.5 %).
	DefaultMaxPendingWrites = 2048
	DefaultMaxClients       = 20_000
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the TCP address, e.g. 127.0.0.1:1883; port 0 picks one.
	Listen string
	// ListenWS, if set, is the address of MQTT over WebSocket (ws.go:
	// ws://<address>/mqtt) for clients in browsers, under the same
	// logins, ACL and bounds as Listen (the per-address ones shared).
	ListenWS string
	// MaxPendingWrites bounds each client's outbound queue (default
	// DefaultMaxPendingWrites). Policy of mochi when full: drop and count.
	// The flow hook keeps a QoS 1 subscriber (ingest) at half of it, in
	// flight and queued together, by holding the publishers back.
	MaxPendingWrites int
	// Passwd is a Mosquitto password file (see ParsePasswords); default
	// deploy.MosquittoPasswd, the demo's users with their DEMO DEFAULT
	// passwords.
	Passwd []byte
	// ACL is a Mosquitto ACL file (see ParseACL); default deploy.MosquittoACL.
	ACL []byte
	// FleetSecret is what every device's password is derived from
	// (internal/devicecred); default deploy.DemoFleetSecret, a DEMO
	// DEFAULT. A device logs in as <region>/<device-type>/<device-id> with
	// its device id as client id.
	FleetSecret string
	// Insecure lets clients without a user name in, with access to every
	// topic, beside the users of Passwd (a wrong password is still
	// refused). Only on a loopback Listen address.
	Insecure bool
	// MaxClients bounds the clients connected at once (default
	// DefaultMaxClients); one more is refused with "server busy".
	MaxClients int
	// LoginTimeout is how long a connection may take to send its whole
	// CONNECT; then it is closed (default DefaultLoginTimeout).
	LoginTimeout time.Duration
	// MaxLoggingIn bounds connections that have not sent their CONNECT
	// yet, from every address (default DefaultMaxLoggingIn), and
	// MaxLoggingInPerIP from one address (default DefaultMaxLoggingInPerIP).
	// One more is closed at once, counted and logged.
	MaxLoggingIn      int
	MaxLoggingInPerIP int
	// MaxConnsPerIP bounds connections from one address, logged in or not
	// (default DefaultMaxConnsPerIP): a load generator's whole fleet comes
	// from one address.
	MaxConnsPerIP int
	// MaxFailedLoginsPerIP failed logins from one address within
	// FailedLoginWindow make the broker refuse that address's new
	// connections until the window ends (defaults
	// connlimit.DefaultMaxFailedLoginsPerIP, connlimit.DefaultFailedLoginWindow).
	MaxFailedLoginsPerIP int
	FailedLoginWindow    time.Duration

	// inflight is mochi's limit of messages in flight per client, 0:
	// maxInflight. Tests lower it (export_test.go).
	inflight int
}

// ErrInsecureNotLoopback is returned by Validate when Insecure is asked for
// on an address other machines can reach.
var ErrInsecureNotLoopback = errors.New("broker: anonymous MQTT (--insecure) is only allowed on a loopback address")

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("broker: listen address is required")
	}
	if c.Insecure && (!isLoopback(c.Listen) || c.ListenWS != "" && !isLoopback(c.ListenWS)) {
		return fmt.Errorf("%w, not %s: listen on 127.0.0.1:<port>, or drop --insecure so that clients must log in", ErrInsecureNotLoopback, c.Listen)
	}
	for _, b := range []struct {
		name       string
		value, def int
	}{
		{"max clients", c.MaxClients, DefaultMaxClients},
		{"max connections logging in", c.MaxLoggingIn, DefaultMaxLoggingIn},
		{"max connections logging in per address", c.MaxLoggingInPerIP, DefaultMaxLoggingInPerIP},
		{"max connections per address", c.MaxConnsPerIP, DefaultMaxConnsPerIP},
		{"max failed logins per address", c.MaxFailedLoginsPerIP, connlimit.DefaultMaxFailedLoginsPerIP},
	} {
		if b.value < 0 {
			return fmt.Errorf("broker: %s %d: want 1 or more (0: %d)", b.name, b.value, b.def)
		}
	}
	if c.FailedLoginWindow < 0 {
		return fmt.Errorf("broker: failed login window %v: want more than 0 (0: %v)", c.FailedLoginWindow, connlimit.DefaultFailedLoginWindow)
	}
	if c.LoginTimeout < 0 {
		return fmt.Errorf("broker: login timeout %v: want more than 0 (0: %v)", c.LoginTimeout, DefaultLoginTimeout)
	}
	if c.MaxPendingWrites != 0 && (c.MaxPendingWrites < 2 || c.MaxPendingWrites > maxInflight) {
		return fmt.Errorf("broker: max pending writes %d: want 2 to %d (0: %d)", c.MaxPendingWrites, maxInflight, DefaultMaxPendingWrites)
	}
	if c.FleetSecret != "" {
		if err := devicecred.ValidSecret(c.FleetSecret); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	if _, err := ParsePasswords(c.passwd()); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if _, err := ParseACL(c.acl()); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.MaxPendingWrites == 0 {
		c.MaxPendingWrites = DefaultMaxPendingWrites
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = DefaultLoginTimeout
	}
	if c.MaxLoggingIn == 0 {
		c.MaxLoggingIn = DefaultMaxLoggingIn
	}
	if c.MaxLoggingInPerIP == 0 {
		c.MaxLoggingInPerIP = DefaultMaxLoggingInPerIP
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxFailedLoginsPerIP == 0 {
		c.MaxFailedLoginsPerIP = connlimit.DefaultMaxFailedLoginsPerIP
	}
	if c.FailedLoginWindow == 0 {
		c.FailedLoginWindow = connlimit.DefaultFailedLoginWindow
	}
}

func (c Config) maxInflight() int {
	if c.inflight == 0 {
		return maxInflight
	}
	return c.inflight
}

func (c Config) fleetSecret() string { return cmp.Or(c.FleetSecret, deploy.DemoFleetSecret) }

func (c Config) passwd() []byte {
	if c.Passwd == nil {
		return deploy.MosquittoPasswd
	}
	return c.Passwd
}

func (c Config) acl() []byte {
	if c.ACL == nil {
		return deploy.MosquittoACL
	}
	return c.ACL
}

// isLoopback reports whether addr (host:port) listens on loopback only: an
// empty host or 0.0.0.0 listens everywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Broker is a running embedded MQTT broker.
type Broker struct {
	srv  *mqtt.Server
	tcp  *gate
	ws   *gate // nil without Config.ListenWS
	auth *authHook
	// takeover keeps the messages mochi would lose when a session resumes.
	takeover *takeoverHook
	// flow holds publishers back while ingest is behind.
	flow *flowHook
	reg  *prometheus.Registry
	once sync.Once
	err  error
}

// Start listens and serves in the background.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	log = log.With("component", "broker")
	h, err := newAuthHook(cfg)
	if err != nil {
		return nil, err
	}
	// The auth hook counts a failed login before its CONNACK goes out;
	// the gate holds the address back from its next connection.
	h.failures = connlimit.NewFailures(cfg.MaxFailedLoginsPerIP, cfg.FailedLoginWindow)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	caps.MaximumInflight = uint16(cfg.maxInflight())
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.MaximumPacketSize = MaxPacketBytes
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Capabilities: caps,
		// mochi logs a line per client event (a packet refused by the
		// ACL, a client gone), at warn: a hostile client's loop would be a
		// line per packet. Those are counted in the metrics and the gate
		// logs connections rate limited; mochi keeps its errors.
		Logger: slog.New(minLevel{Handler: log.Handler(), min: slog.LevelError}),
	})
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("broker: adding auth hook: %w", err)
	}
	takeover := newTakeoverHook(srv)
	if err := srv.AddHook(takeover, nil); err != nil {
		return nil, fmt.Errorf("broker: adding session takeover hook: %w", err)
	}
	flow := newFlowHook(srv, min(cfg.MaxPendingWrites, cfg.maxInflight())/2)
	if err := srv.AddHook(flow, nil); err != nil {
		return nil, fmt.Errorf("broker: adding flow hook: %w", err)
	}
	if cfg.Insecure {
		log.Warn("INSECURE: MQTT clients without credentials may connect, publish anything and read everything (--insecure); loopback only",
			"listen", cfg.Listen)
	}
	tcp := newGate(cfg, h.failures, log)
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: listening on %s: %w", cfg.Listen, err)
	}
	var ws *gate
	if cfg.ListenWS != "" {
		ws = newWSGate(tcp, cfg.ListenWS)
		if err := srv.AddListener(ws); err != nil {
			return nil, fmt.Errorf("broker: listening for WebSockets on %s: %w", cfg.ListenWS, err)
		}
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: serving: %w", err)
	}
	b := &Broker{srv: srv, tcp: tcp, ws: ws, auth: h, takeover: takeover, flow: flow, reg: prometheus.NewRegistry()}
	b.reg.MustRegister(b.collectors()...)
	return b, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL is the broker's address as an MQTT client URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// WSURL is the MQTT over WebSocket URL, ws://<host:port>/mqtt; empty
// without Config.ListenWS.
func (b *Broker) WSURL() string {
	if b.ws == nil {
		return ""
	}
	return "ws://" + b.ws.Address() + WSPath
}

// WSPort is the MQTT over WebSocket listener's port; 0 without
// Config.ListenWS.
func (b *Broker) WSPort() int {
	if b.ws == nil || b.ws.ln == nil {
		return 0
	}
	return b.ws.ln.Addr().(*net.TCPAddr).Port
}

// closeRetry is how often Close disconnects again the clients that got in
// while it was closing.
const closeRetry = 100 * time.Millisecond

// Close disconnects every client and stops listening.
func (b *Broker) Close() error {
	b.once.Do(func() {
		// mochi (v2.7.9) closes a listener's clients with a lookup that
		// takes the client list's read lock twice over; a client leaving
		// meanwhile asks for the write lock in between, and both wait for
		// ever (mochi-mqtt/server#488, fix proposed in #489). Closing the
		// listeners first, with a closer that takes the lock once, leaves
		// mochi's Close nothing to look up.
		//
		// mochi's Close then waits for every client to leave. A client
		// that was logging in while the clients were looked up is not
		// disconnected and would keep it waiting (mochi-mqtt/server#424,
		// #541), so they are looked up again until Close returns.
		closed := make(chan error, 1)
		go func() {
			b.srv.Listeners.CloseAll(b.closeClients)
			closed <- b.srv.Close()
		}()
		retry := time.NewTicker(closeRetry)
		defer retry.Stop()
		for {
			select {
			case b.err = <-closed:
				return
			case <-retry.C:
				b.closeClients(b.tcp.ID())
				if b.ws != nil {
					b.closeClients(b.ws.ID())
				}
			}
		}
	})
	return b.err
}

// closeClients disconnects the clients of one listener, for Close.
func (b *Broker) closeClients(listener string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// RemovePhones ends every phone's credential issued until at, and
// disconnects the phones logged in (the presenter removing the audience's
// phones, package join); it returns how many it disconnected. A phone
// with a credential issued after at logs in as before.
func (b *Broker) RemovePhones(at time.Time) int {
	for {
		old := b.auth.phonesSince.Load()
		if old >= at.UnixMilli() || b.auth.phonesSince.CompareAndSwap(old, at.UnixMilli()) {
			break
		}
	}
	n := 0
	for _, cl := range b.srv.Clients.GetAll() {
		if devicecred.IsPhone(string(cl.Properties.Username)) && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
			n++
		}
	}
	return n
}

// Refused is how many connections the broker refused for reason (a
// reason label of telemetry_broker_connections_refused_total).
func (b *Broker) Refused(reason string) uint64 { return b.tcp.refused.Count(reason) }

// minLevel is a slog.Handler that drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(as), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}
