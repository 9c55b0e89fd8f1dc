package broker

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// Bounds of the broker's listener; the Config fields that change them are
// documented there, and docs/SECURITY.md lists them all.
const (
	DefaultLoginTimeout      = 5 * time.Second
	DefaultMaxLoggingIn      = 10_000
	DefaultMaxLoggingInPerIP = 1_000
	DefaultMaxConnsPerIP     = 5_000

	// MaxConnectBytes bounds a CONNECT packet (its remaining length): the
	// client id, user name, password and a will fit in far less. A larger
	// one is refused (connect_too_large) before mochi sees it.
	MaxConnectBytes = 16 << 10
	// MaxPacketBytes bounds every MQTT packet, as Mosquitto's
	// max_packet_size does (deploy/mosquitto/mosquitto.conf): mochi
	// disconnects a client that declares a larger one, before reading it.
	MaxPacketBytes = 256 << 10
)

// Reasons of telemetry_broker_connections_refused_total.
const (
	refusedTooMany          = connlimit.ReasonTooMany            // every connection: MaxClients + MaxLoggingIn
	refusedTooManyFromIP    = connlimit.ReasonTooManyFromAddress // MaxConnsPerIP
	refusedLoggingIn        = "too_many_logging_in"              // MaxLoggingIn
	refusedLoggingInFromIP  = "too_many_logging_in_from_address" // MaxLoggingInPerIP
	refusedLoginTimeout     = "login_timeout"                    // no whole CONNECT within LoginTimeout
	refusedClosedEarly      = "closed_before_login"              // the client left before its CONNECT
	refusedNotMQTT          = "not_mqtt"                         // the first packet is not a CONNECT
	refusedConnectTooLarge  = "connect_too_large"                // CONNECT above MaxConnectBytes
	refusedBadLogin         = "bad_login"                        // unknown user, wrong password, anonymous
	refusedFailedLogins     = "too_many_failed_logins"           // MaxFailedLoginsPerIP within FailedLoginWindow
	refusedBadConnect       = "bad_connect"                      // mochi refused the CONNECT (client id, protocol)
	refusedServerBusy       = "server_busy"                      // MaxClients logged in
	endedWithError          = "error"                            // a logged-in client's connection failed
	endedKeepaliveExpired   = "keepalive_expired"                // nothing from a logged-in client for 1.5 keepalives
	endedProtocolError      = "protocol_error"                   // a logged-in client broke the protocol
	endedConnectionReset    = "connection_reset"                 // the client went away without DISCONNECT
	connectType             = packets.Connect << 4
	maxRemainingLengthBytes = 4
)

var refusedReasons = []string{refusedTooMany, refusedTooManyFromIP, refusedLoggingIn, refusedLoggingInFromIP,
	refusedLoginTimeout, refusedClosedEarly, refusedNotMQTT, refusedConnectTooLarge, refusedBadLogin,
	refusedFailedLogins, refusedBadConnect, refusedServerBusy, refusedNotWebSocket}

// gate is the broker's TCP listener, a mochi listeners.Listener. It hands
// a connection to mochi only once its whole CONNECT has arrived, within
// LoginTimeout: until then a connection costs a goroutine and a few bytes,
// not a mochi client with its queues. It bounds connections in total, from
// one address, and logging in; what it refuses it counts and logs, rate
// limited, in refused.
type gate struct {
	id, address string
	timeout     time.Duration

	ln       net.Listener
	conns    *connlimit.Tracker  // every connection, until closed
	loggedIn *connlimit.Tracker  // connections waiting for their CONNECT
	failures *connlimit.Failures // by address
	refused  *connlimit.Tally
	ended    *connlimit.Tally // logged-in clients whose connection failed
	log      *slog.Logger

	// upgrade, set on the WebSocket listener (ws.go), turns a new
	// connection into the stream of MQTT bytes, within the login timeout.
	upgrade func(net.Conn) (net.Conn, error)

	end     atomic.Bool
	mu      sync.Mutex
	waiting map[net.Conn]struct{} // closed by Close
}

var _ listeners.Listener = (*gate)(nil)

func newGate(cfg Config, failures *connlimit.Failures, log *slog.Logger) *gate {
	return &gate{
		id: "tcp", address: cfg.Listen, timeout: cfg.LoginTimeout,
		conns:    connlimit.NewTracker(connlimit.Limits{Total: cfg.MaxClients + cfg.MaxLoggingIn, PerAddr: cfg.MaxConnsPerIP}),
		loggedIn: connlimit.NewTracker(connlimit.Limits{Total: cfg.MaxLoggingIn, PerAddr: cfg.MaxLoggingInPerIP}),
		failures: failures,
		refused: connlimit.NewTally("telemetry_broker_connections_refused_total",
			"MQTT connections refused, by reason: limits (too_many*), no CONNECT in time (login_timeout), not MQTT, bad credentials (bad_login), an address that failed to log in too often (too_many_failed_logins), broker full (server_busy).",
			"MQTT connections refused", log, refusedReasons...),
		ended: connlimit.NewTally("telemetry_broker_connections_failed_total",
			"Connections of logged-in MQTT clients that ended without a DISCONNECT, by reason.",
			"MQTT connections ended without DISCONNECT", log,
			endedWithError, endedKeepaliveExpired, endedProtocolError, endedConnectionReset),
		log:     log,
		waiting: map[net.Conn]struct{}{},
	}
}

func (g *gate) ID() string { return g.id }
func (g *gate) Protocol() string {
	if g.upgrade != nil {
		return "ws"
	}
	return "tcp"
}

func (g *gate) Address() string {
	if g.ln != nil {
		return g.ln.Addr().String()
	}
	return g.address
}

func (g *gate) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", g.address)
	g.ln = ln
	return err
}

// Serve accepts connections until Close, each admitted in a goroutine.
func (g *gate) Serve(establish listeners.EstablishFn) {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if g.end.Load() {
			_ = c.Close()
			return
		}
		host := connlimit.Host(c.RemoteAddr())
		if g.failures.Blocked(host, time.Now()) {
			g.refuse(c, refusedFailedLogins, host)
			continue
		}
		if reason := g.conns.Acquire(host); reason != "" {
			g.refuse(c, reason, host)
			continue
		}
		if reason := g.loggedIn.Acquire(host); reason != "" {
			g.conns.Release(host)
			g.refuse(c, map[string]string{connlimit.ReasonTooMany: refusedLoggingIn, connlimit.ReasonTooManyFromAddress: refusedLoggingInFromIP}[reason], host)
			continue
		}
		g.mu.Lock()
		g.waiting[c] = struct{}{}
		g.mu.Unlock()
		go g.admit(c, host, establish)
	}
}

// refuse counts c's refusal, then closes it: a client that sees its
// connection closed finds it counted.
func (g *gate) refuse(c net.Conn, reason, host string) {
	g.refused.Add(reason, host)
	_ = c.Close()
}

// admit reads c's CONNECT within the login timeout, then hands c, with the
// CONNECT to be read again, to mochi for the rest of its life.
func (g *gate) admit(c net.Conn, host string, establish listeners.EstablishFn) {
	deadline := time.Now().Add(g.timeout)
	_ = c.SetDeadline(deadline)
	raw := c // in waiting, for Close
	var connect []byte
	reason := ""
	if g.upgrade != nil {
		u, err := g.upgrade(c)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = refusedLoginTimeout
		case err != nil:
			reason = refusedNotWebSocket
		default:
			// The upgrade clears the connection's deadlines; the CONNECT
			// is still due within the login timeout.
			c = u
			_ = c.SetDeadline(deadline)
		}
	}
	if reason == "" {
		connect, reason = readConnect(c)
	}
	g.loggedIn.Release(host)
	g.mu.Lock()
	delete(g.waiting, raw)
	g.mu.Unlock()
	if reason != "" {
		g.conns.Release(host)
		g.refuse(c, reason, host)
		return
	}
	// mochi sets the deadline of the client's keepalive once it has
	// logged in; until then the login timeout still runs.
	_ = c.SetDeadline(time.Now().Add(g.timeout))
	conn := connlimit.Release(&replayConn{Conn: c, head: bytes.NewReader(connect)}, func() { g.conns.Release(host) })
	err := establish(g.id, conn)
	_ = conn.Close()
	g.classify(err, host)
}

// classify counts how a connection mochi served ended.
func (g *gate) classify(err error, host string) {
	var code packets.Code
	switch {
	case err == nil, g.end.Load():
	case errors.Is(err, packets.ErrBadUsernameOrPassword):
		g.refused.Add(refusedBadLogin, host)
	case errors.Is(err, packets.ErrServerBusy):
		g.refused.Add(refusedServerBusy, host)
	case errors.As(err, &code) && isConnectRefusal(code):
		g.refused.Add(refusedBadConnect, host)
	case errors.Is(err, os.ErrDeadlineExceeded):
		g.ended.Add(endedKeepaliveExpired, host)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		g.ended.Add(endedConnectionReset, host)
	case errors.As(err, &code):
		g.ended.Add(endedProtocolError, host)
	default:
		g.ended.Add(endedWithError, host)
	}
}

// isConnectRefusal reports whether code is one mochi answers a CONNECT it
// refuses with.
func isConnectRefusal(code packets.Code) bool {
	switch code.Code {
	case packets.ErrUnsupportedProtocolVersion.Code, packets.ErrClientIdentifierNotValid.Code,
		packets.ErrMalformedProtocolName.Code, packets.ErrProtocolViolationRequireFirstConnect.Code:
		return true
	}
	return false
}

// readConnect reads a whole CONNECT packet from c, or returns why not.
func readConnect(c net.Conn) ([]byte, string) {
	var head [1 + maxRemainingLengthBytes]byte
	if _, err := io.ReadFull(c, head[:1]); err != nil {
		return nil, readFailure(err)
	}
	if head[0] != connectType {
		return nil, refusedNotMQTT
	}
	remaining, n := 0, 1
	for shift := 0; ; shift += 7 {
		if n > maxRemainingLengthBytes {
			return nil, refusedNotMQTT
		}
		if _, err := io.ReadFull(c, head[n:n+1]); err != nil {
			return nil, readFailure(err)
		}
		remaining |= int(head[n]&0x7f) << shift
		n++
		if head[n-1]&0x80 == 0 {
			break
		}
	}
	if remaining > MaxConnectBytes {
		return nil, refusedConnectTooLarge
	}
	packet := make([]byte, n+remaining)
	copy(packet, head[:n])
	if _, err := io.ReadFull(c, packet[n:]); err != nil {
		return nil, readFailure(err)
	}
	return packet, ""
}

func readFailure(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return refusedLoginTimeout
	}
	return refusedClosedEarly
}

// Close stops accepting, closes the connections still logging in and has
// mochi close its clients of this listener.
func (g *gate) Close(closeClients listeners.CloseFn) {
	if g.end.Swap(true) {
		return
	}
	if g.ln != nil {
		_ = g.ln.Close()
	}
	g.mu.Lock()
	for c := range g.waiting {
		_ = c.Close()
	}
	g.mu.Unlock()
	closeClients(g.id)
}

// replayConn reads head first, then the connection: the CONNECT the gate
// read, for mochi to read again.
type replayConn struct {
	net.Conn
	head *bytes.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.head.Len() > 0 {
		return c.head.Read(p)
	}
	return c.Conn.Read(p)
}
