package dashboard

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// Why a websocket client was disconnected, as the reason label of
// telemetry_dashboard_ws_dropped_total.
const (
	dropQueueFull   = "queue_full"   // ClientQueue snapshots were waiting
	dropWriteFailed = "write_failed" // a write failed or took longer than WriteTimeout
	dropPongTimeout = "pong_timeout" // no answer to pings within PongWait
	dropShutdown    = "shutdown"     // the dashboard is stopping
)

// hub fans snapshots out to websocket clients. Broadcast never blocks: each
// client has a queue of Config.ClientQueue and is dropped when it is full.
type hub struct {
	log          *slog.Logger
	queue        int
	writeTimeout time.Duration
	pongWait     time.Duration
	// dropped counts and logs disconnected clients, rate limited: a
	// flood of viewers that never read, or a shutdown with 2,000 of
	// them, is a line per reason per interval, not one per viewer.
	dropped      *connlimit.Tally
	clientsGauge prometheus.Gauge

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	wg      sync.WaitGroup
}

type client struct {
	conn *websocket.Conn
	send chan []byte
	// done is closed, once, when the client is removed; its writer then
	// closes the connection, which ends its reader.
	done chan struct{}
	// release, if set, is called once the writer has closed the
	// connection.
	release func()
}

func newHub(cfg Config, log *slog.Logger, reg prometheus.Registerer) *hub {
	h := &hub{
		log:          log,
		queue:        cfg.ClientQueue,
		writeTimeout: cfg.WriteTimeout,
		pongWait:     cfg.PongWait,
		clients:      map[*client]struct{}{},
		dropped: connlimit.NewTally("telemetry_dashboard_ws_dropped_total",
			"Websocket clients disconnected by the dashboard, by reason (queue_full, write_failed, pong_timeout, shutdown).",
			"websocket client dropped", log, dropQueueFull, dropWriteFailed, dropPongTimeout, dropShutdown),
		clientsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemetry_dashboard_ws_clients",
			Help: "Websocket clients connected.",
		}),
	}
	reg.MustRegister(h.dropped, h.clientsGauge)
	return h
}

// add registers conn, queues first (the latest snapshot, if any) for it and
// starts its writer and reader; release, if not nil, is called once conn
// is closed. It reports false if the hub is closed (and release is not
// called).
func (h *hub) add(conn *websocket.Conn, first []byte, release func()) bool {
	c := &client{conn: conn, send: make(chan []byte, h.queue), done: make(chan struct{}), release: release}
	if first != nil {
		c.send <- first
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	h.clients[c] = struct{}{}
	h.clientsGauge.Set(float64(len(h.clients)))
	h.wg.Add(2)
	h.mu.Unlock()
	go h.write(c)
	go h.read(c)
	return true
}

// broadcast queues msg for every client, dropping those whose queue is full.
func (h *hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.send <- msg:
		default:
			h.removeLocked(c, dropQueueFull)
		}
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// remove forgets c; reason "" means it left by itself and is not counted
// as dropped.
func (h *hub) remove(c *client, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(c, reason)
}

func (h *hub) removeLocked(c *client, reason string) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	close(c.done)
	h.clientsGauge.Set(float64(len(h.clients)))
	if reason == dropQueueFull && c.conn != nil {
		// Its writer is most likely blocked in a write: unblock it now
		// rather than after WriteTimeout.
		_ = c.conn.NetConn().Close()
	}
	if reason != "" {
		h.dropped.Add(reason, remoteAddr(c.conn))
	}
}

// close disconnects every client, with a close frame where the client
// takes it within a second, and waits for their goroutines.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	conns := make([]*websocket.Conn, 0, len(h.clients))
	for c := range h.clients {
		conns = append(conns, c.conn)
		h.removeLocked(c, dropShutdown)
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		for _, conn := range conns {
			_ = conn.NetConn().Close()
		}
		<-done
	}
}

// write sends c's queued snapshots and pings until c is removed, then
// closes the connection.
func (h *hub) write(c *client) {
	defer h.wg.Done()
	ping := time.NewTicker(h.pongWait * 9 / 10)
	defer ping.Stop()
	defer func() {
		c.conn.Close()
		if c.release != nil {
			c.release()
		}
	}()
	for {
		select {
		case <-c.done:
			// Best effort: a stalled client gets no close frame in time.
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(100*time.Millisecond))
			return
		case msg := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(h.writeTimeout))
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				h.remove(c, dropWriteFailed)
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(h.writeTimeout)); err != nil {
				h.remove(c, dropWriteFailed)
				return
			}
		}
	}
}

// read discards what the client sends (the page sends nothing) and keeps
// the connection alive while pongs arrive. Reading is also what processes
// the client's close frame.
func (h *hub) read(c *client) {
	defer h.wg.Done()
	c.conn.SetReadLimit(4096)
	_ = c.conn.SetReadDeadline(time.Now().Add(h.pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(h.pongWait))
	})
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				h.remove(c, dropPongTimeout)
			} else {
				h.remove(c, "")
			}
			return
		}
	}
}

func remoteAddr(c *websocket.Conn) string {
	if c == nil {
		return ""
	}
	return c.RemoteAddr().String()
}
