package mqttsub

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Client. Tests build it directly.
type Config struct {
	// Broker is the broker's URL: tcp:// or mqtt:// for plain TCP, ssl://,
	// tls:// or mqtts:// for TLS.
	Broker   string
	ClientID string
	Username string
	Password string
	// Filter is the topic filter subscribed to at QoS 1 on every
	// connection (a broker that lost the session gets it back).
	Filter string
	// CleanSession asks the broker to forget the session at each connect.
	// Off by default: the broker keeps the subscription and the messages
	// that arrive while the client is away.
	CleanSession bool

	// KeepAlive is announced in CONNECT; a PINGREQ goes out every half of
	// it, and a connection from which nothing arrives for one and a half
	// times it (while the handler is not holding the reader) is dropped and
	// made again. It also bounds each write to the connection. Default 30 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds dialling and the wait for CONNACK. Default 10 s.
	ConnectTimeout time.Duration
	// RetryInterval is the pause after the first failed attempt to
	// connect; it doubles up to MaxRetryInterval. Defaults 1 s and 5 s.
	// After a connection that lasted MaxRetryInterval is lost the first
	// attempt is immediate; after a shorter one it backs off the same way.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// MaxPacketSize bounds the bytes kept of one packet from the broker.
	// A PUBLISH beyond it is delivered without its payload (Omitted gives
	// the size), so that it can be acknowledged and accounted for. Default
	// 1 MiB.
	MaxPacketSize int

	// TLS configures ssl://, tls:// and mqtts:// brokers; default the
	// system's roots and the broker's host name.
	TLS *tls.Config
	// Wrap, if set, wraps each new connection, e.g. to buffer its writes.
	Wrap func(net.Conn) net.Conn
	// ConnectFailed, if set, is called after each failed attempt to
	// connect, with the reason.
	ConnectFailed func(error)
	// Subscribed, if set, is called when the broker answers the
	// subscription of a connection: nil, or ErrSubscribeRefused.
	Subscribed func(error)
}

// ErrSubscribeRefused: the broker answered the SUBSCRIBE with failure
// (0x80), e.g. because its ACL does not let the user read the filter.
// 0x91 (packet id in use), which MQTT 3.1.1 does not have but the
// embedded broker sends, makes the client subscribe again with another
// packet id, at most maxSubscribeTries times.
var ErrSubscribeRefused = errors.New("MQTT subscription refused by the broker")

const (
	// codeIDInUse is the SUBACK code of a SUBSCRIBE whose packet id the
	// broker has in use (MQTT 5's 0x91).
	codeIDInUse = 0x91
	// maxSubscribeTries bounds how often one connection subscribes again
	// after codeIDInUse; subscribeIDStride apart, the tries cover the id
	// space.
	maxSubscribeTries = 8
	subscribeIDStride = 8191
)

func (c *Config) setDefaults() {
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	if c.MaxRetryInterval == 0 {
		c.MaxRetryInterval = 5 * time.Second
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = 1 << 20
	}
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	c.setDefaults()
	if _, _, err := brokerAddress(c.Broker); err != nil {
		return err
	}
	switch {
	case c.Filter == "":
		return errors.New("mqttsub: a topic filter is required")
	case c.KeepAlive < time.Second || c.KeepAlive > 0xffff*time.Second:
		return fmt.Errorf("mqttsub: keep-alive %v: want 1s to 18h12m15s", c.KeepAlive)
	case c.ConnectTimeout < 0 || c.RetryInterval < 0 || c.MaxRetryInterval < 0:
		return errors.New("mqttsub: timeouts and intervals must not be negative")
	case c.MaxPacketSize < 64:
		return fmt.Errorf("mqttsub: max packet size %d: want at least 64 bytes", c.MaxPacketSize)
	}
	for what, s := range map[string]string{"client id": c.ClientID, "username": c.Username, "password": c.Password, "filter": c.Filter} {
		if len(s) > 0xffff {
			return fmt.Errorf("mqttsub: %s of %d bytes: at most 65535", what, len(s))
		}
	}
	return nil
}

// brokerAddress splits a broker URL into host:port and whether it is TLS.
func brokerAddress(broker string) (addr string, useTLS bool, err error) {
	u, err := url.Parse(broker)
	if err != nil {
		return "", false, fmt.Errorf("mqttsub: broker URL %q: %w", broker, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		useTLS = true
	default:
		return "", false, fmt.Errorf("mqttsub: broker URL %q: want tcp://, mqtt://, ssl://, tls:// or mqtts://", broker)
	}
	if u.Port() == "" {
		return "", false, fmt.Errorf("mqttsub: broker URL %q has no port", broker)
	}
	return u.Host, useTLS, nil
}

// Message is one PUBLISH from the broker. Topic and Payload are the
// client's own, never reused: they may be kept after Ack.
type Message struct {
	Topic   string
	Payload []byte
	// Omitted is the size of a payload beyond Config.MaxPacketSize, which
	// was read and dropped; Payload is then empty.
	Omitted   int
	Duplicate bool // the broker's DUP flag: it may have sent this before
	QoS       byte

	id   uint16
	conn *conn // the connection it came on: its PUBACK goes there or nowhere
}

// Client is a subscriber with one persistent QoS 1 subscription.
type Client struct {
	cfg    Config
	log    *slog.Logger
	handle func(Message)
	addr   string
	tls    *tls.Config // nil for plain TCP

	current atomic.Pointer[conn]
}

// New builds a client that gives each message to handle, on the
// connection's reader goroutine, in the order they arrive. While handle
// runs nothing more is read: a handler that blocks is backpressure, and the
// broker holds what follows. Run connects.
func New(cfg Config, handle func(Message), log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	addr, useTLS, _ := brokerAddress(cfg.Broker)
	c := &Client{cfg: cfg, log: log, handle: handle, addr: addr}
	if useTLS {
		c.tls = cfg.TLS
		if c.tls == nil {
			host, _, _ := net.SplitHostPort(addr)
			c.tls = &tls.Config{ServerName: host}
		}
	}
	return c, nil
}

// Connected reports whether the client holds an accepted connection.
func (c *Client) Connected() bool { return c.current.Load() != nil }

// Subscribed reports whether the broker granted the subscription of the
// current connection. A connection whose subscription was refused stays
// up (messages of a session's earlier subscription still arrive) and
// asks again every resubscribeEvery.
func (c *Client) Subscribed() bool {
	cn := c.current.Load()
	return cn != nil && cn.subscribed.Load()
}

// resubscribeEvery is how often a connection whose subscription the
// broker refused asks again (an ACL may be fixed meanwhile).
const resubscribeEvery = 5 * time.Second

// Ack sends m's PUBACK on the connection m came on. If that connection is
// gone the PUBACK is dropped: the broker redelivers m on the next one (a
// PUBACK sent there could acknowledge another message that reuses the
// packet id). Acks must be sent in the order messages arrived, as MQTT
// requires of a QoS 1 subscriber.
func (c *Client) Ack(m Message) error {
	if m.QoS == 0 || m.conn == nil {
		return nil
	}
	var b [4]byte
	return m.conn.write(pubackPacket(b[:0], m.id))
}

// Run connects, subscribes, and reads messages until ctx is cancelled,
// connecting again whenever the connection is lost. When ctx is cancelled
// it sends DISCONNECT after the PUBACKs already written and closes the
// connection; the broker keeps the session.
func (c *Client) Run(ctx context.Context) error {
	wait := c.cfg.RetryInterval
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, c.cfg.MaxRetryInterval)
	}
	var lastFailure string
	for ctx.Err() == nil {
		cn, sessionPresent, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if c.cfg.ConnectFailed != nil {
				c.cfg.ConnectFailed(err)
			}
			// Once per distinct reason: retries every few seconds must
			// not flood the log.
			if why := err.Error(); why != lastFailure {
				lastFailure = why
				c.log.Error("MQTT connect failed; retrying", "broker", c.cfg.Broker, "user", c.cfg.Username, "err", err)
			}
			pause()
			continue
		}
		lastFailure = ""
		c.log.Info("MQTT connected", "broker", c.cfg.Broker, "session_present", sessionPresent)
		c.current.Store(cn)
		began := time.Now()
		err = c.serve(ctx, cn)
		c.current.Store(nil)
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("MQTT connection lost", "err", err)
		if time.Since(began) >= c.cfg.MaxRetryInterval {
			wait = c.cfg.RetryInterval
			continue // a connection that lasted: try again at once
		}
		// Lost right after it was made (another client taking the same
		// client id, a broker dropping it at once): back off as after a
		// failed attempt, so that two clients do not take the id from each
		// other in a tight loop.
		pause()
	}
	return nil
}

// connect dials the broker and logs in.
func (c *Client) connect(ctx context.Context) (cn *conn, sessionPresent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	var nc net.Conn
	d := net.Dialer{}
	if c.tls != nil {
		nc, err = (&tls.Dialer{NetDialer: &d, Config: c.tls}).DialContext(ctx, "tcp", c.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", c.addr)
	}
	if err != nil {
		return nil, false, fmt.Errorf("dialing %s: %w", c.addr, err)
	}
	if c.cfg.Wrap != nil {
		nc = c.cfg.Wrap(nc)
	}
	cn = newConn(nc, c.cfg.KeepAlive)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	pkt, err := connectPacket(c.cfg.ClientID, c.cfg.Username, c.cfg.Password, c.cfg.CleanSession, uint16(c.cfg.KeepAlive/time.Second))
	if err == nil {
		err = cn.write(pkt)
	}
	var p packet
	if err == nil {
		p, err = readPacket(cn.r, c.cfg.MaxPacketSize)
	}
	if err == nil && p.kind != typeConnack {
		err = protocolError("packet type %d before CONNACK", p.kind)
	}
	if err == nil {
		err = connackError(p.body)
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil && !errors.Is(err, ErrProtocol) {
			err = fmt.Errorf("no CONNACK within %v: %w", c.cfg.ConnectTimeout, err)
		}
		return nil, false, fmt.Errorf("connecting to %s as %q: %w", c.addr, c.cfg.ClientID, err)
	}
	if !stop() {
		return nil, false, fmt.Errorf("connecting to %s: %w", c.addr, ctx.Err())
	}
	return cn, p.body[0]&1 == 1, nil
}

// serve subscribes and reads cn until it fails or ctx is cancelled.
func (c *Client) serve(ctx context.Context, cn *conn) error {
	cn.subscribeID = 1
	if err := cn.write(subscribePacket(cn.subscribeID, c.cfg.Filter)); err != nil {
		cn.Close()
		return fmt.Errorf("subscribing to %s: %w", c.cfg.Filter, err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); c.keepAlive(ctx, cn, done) }()
	err := c.read(cn)
	close(done)
	cn.Close()
	wg.Wait()
	if failed := cn.failure.Load(); failed != nil {
		return *failed
	}
	return err
}

// read reads and dispatches packets until the connection fails.
func (c *Client) read(cn *conn) error {
	for {
		p, err := readPacket(cn.r, c.cfg.MaxPacketSize)
		if err != nil {
			return fmt.Errorf("reading from %s: %w", c.addr, err)
		}
		cn.touch()
		switch p.kind {
		case typePublish:
			qos := (p.flags >> 1) & 3
			if qos == 2 {
				// Subscribed at QoS 1: the broker must downgrade.
				return protocolError("QoS 2 PUBLISH on a QoS 1 subscription")
			}
			m := Message{Topic: p.topic, Payload: p.payload, Omitted: p.omitted,
				Duplicate: p.flags&0x08 != 0, QoS: qos, id: p.id, conn: cn}
			cn.busy.Store(true)
			c.handle(m)
			// Touch first: keepAlive must not see the reader free with
			// the time of the read before a long hold.
			cn.touch()
			cn.busy.Store(false)
		case typeSuback:
			if len(p.body) != 3 {
				return protocolError("SUBACK of %d bytes for one filter", len(p.body))
			}
			var err error
			granted := p.body[2]
			switch {
			case granted <= 2:
				cn.subscribed.Store(true)
				cn.refusedAt.Store(0)
				c.log.Info("MQTT subscribed", "filter", c.cfg.Filter, "qos", granted)
			case granted == codeIDInUse && cn.subscribeTries < maxSubscribeTries:
				// mochi (v2.7.9) checks a client's packet ids against the
				// messages it has in flight to the client (one map for
				// both, mochi-mqtt/server#545): on a resumed session the
				// first ids are often taken. Another id, far from the
				// window of ids in flight, gets an answer.
				cn.subscribeTries++
				cn.subscribeID += subscribeIDStride
				if cn.subscribeID == 0 {
					cn.subscribeID = 1
				}
				c.log.Info("MQTT SUBSCRIBE's packet id in use at the broker; subscribing again with another", "filter", c.cfg.Filter, "packet_id", cn.subscribeID)
				if err := cn.write(subscribePacket(cn.subscribeID, c.cfg.Filter)); err != nil {
					return fmt.Errorf("subscribing to %s: %w", c.cfg.Filter, err)
				}
				continue
			default:
				err = ErrSubscribeRefused
				cn.subscribed.Store(false)
				// Only the first refusal of a connection is logged; the
				// client asks again every resubscribeEvery.
				if cn.refusedAt.Swap(time.Now().UnixNano()) == 0 {
					c.log.Error("MQTT subscribe refused; asking again every "+resubscribeEvery.String(), "filter", c.cfg.Filter, "code", granted)
				}
			}
			if c.cfg.Subscribed != nil {
				c.cfg.Subscribed(err)
			}
		case typePingresp, typeUnsuback:
		default:
			return protocolError("unexpected packet type %d", p.kind)
		}
	}
}

// keepAlive pings the broker, drops a connection from which nothing
// arrives, and disconnects when ctx is cancelled.
func (c *Client) keepAlive(ctx context.Context, cn *conn, done <-chan struct{}) {
	every := c.cfg.KeepAlive / 2
	tick := time.NewTicker(max(every/2, 10*time.Millisecond))
	defer tick.Stop()
	lastPing := time.Now()
	var resubID uint16
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			c.disconnect(cn, done)
			return
		case now := <-tick.C:
			if !cn.busy.Load() && now.Sub(cn.lastRead()) > c.cfg.KeepAlive*3/2 {
				err := fmt.Errorf("nothing from %s for %v", c.addr, now.Sub(cn.lastRead()).Round(time.Millisecond))
				cn.failure.Store(&err)
				cn.Close()
				return
			}
			if at := cn.refusedAt.Load(); at != 0 && now.Sub(time.Unix(0, at)) >= resubscribeEvery {
				cn.refusedAt.Store(now.UnixNano())
				// Its own packet ids: subscribeID belongs to the reader.
				resubID = resubID%0x7fff + 1
				if cn.write(subscribePacket(0x8000+resubID, c.cfg.Filter)) != nil {
					return // the reader sees the connection fail
				}
			}
			if now.Sub(lastPing) >= every {
				lastPing = now
				if cn.write(pingreqPacket) != nil {
					return // the reader sees the connection fail
				}
			}
		}
	}
}

// closeGrace bounds how long a disconnecting client waits for the broker
// to close the connection.
const closeGrace = 2 * time.Second

// disconnect ends cn cleanly: DISCONNECT after everything written before
// it, then the sending side shut down, and the connection closed once the
// broker has closed its side (done: the reader saw it) or closeGrace
// passed. Closing at once could leave bytes the broker sent unread, and a
// socket closed with unread bytes is reset, not closed: the reset can
// discard what the broker has received and not yet read, PUBACKs
// included, and those messages come back as redeliveries.
func (c *Client) disconnect(cn *conn, done <-chan struct{}) {
	_ = cn.write(disconnectPacket)
	cn.wmu.Lock()
	if cw, ok := cn.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	cn.wmu.Unlock()
	select {
	case <-done:
	case <-time.After(closeGrace):
	}
	cn.Close()
}

// conn is one accepted connection to the broker.
type conn struct {
	net.Conn
	r *bufio.Reader

	// subscribeID is the packet id of the SUBSCRIBE sent last,
	// subscribeTries how many times it was sent again (see codeIDInUse).
	// Only the reading goroutine uses them.
	subscribeID    uint16
	subscribeTries int

	wmu          sync.Mutex // serialises writes: PUBACKs, pings, DISCONNECT
	writeTimeout time.Duration
	closeOnce    sync.Once
	read         atomic.Int64 // unix nanoseconds of the last bytes read
	busy         atomic.Bool  // the handler holds the reader
	failure      atomic.Pointer[error]
	// subscribed: the broker granted this connection's subscription;
	// refusedAt (unix nanoseconds) is when it last refused it, 0 if not.
	subscribed atomic.Bool
	refusedAt  atomic.Int64
}

func newConn(nc net.Conn, writeTimeout time.Duration) *conn {
	cn := &conn{Conn: nc, writeTimeout: writeTimeout}
	cn.r = bufio.NewReaderSize(touchReader{cn}, 32<<10)
	cn.touch()
	return cn
}

// touchReader reads cn's connection and marks it alive on every byte, not
// only on whole packets: a large PUBLISH arriving slowly is traffic, and
// keep-alive must not take it for silence (MQTT 3.1.1, 3.1.2.10: any
// control packet resets the timer; a packet still arriving is one).
type touchReader struct{ cn *conn }

func (t touchReader) Read(b []byte) (int, error) {
	n, err := t.cn.Conn.Read(b)
	if n > 0 {
		t.cn.touch()
	}
	return n, err
}

func (cn *conn) touch()              { cn.read.Store(time.Now().UnixNano()) }
func (cn *conn) lastRead() time.Time { return time.Unix(0, cn.read.Load()) }

// write sends b, waiting at most writeTimeout for a broker that stopped
// reading; the connection then fails and is made again.
func (cn *conn) write(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.Conn.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	_, err := cn.Conn.Write(b)
	return err
}

func (cn *conn) Close() error {
	var err error
	cn.closeOnce.Do(func() { err = cn.Conn.Close() })
	return err
}
