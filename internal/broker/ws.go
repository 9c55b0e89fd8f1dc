package broker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WSPath is where the broker's WebSocket listener (Config.ListenWS)
// upgrades: ws://<host>:<port>/mqtt, subprotocol "mqtt", as MQTT
// clients in browsers (mqtt.js) and paho (ws:// URLs) dial it.
const WSPath = "/mqtt"

// refusedNotWebSocket: the WebSocket listener got no upgrade to MQTT over
// WebSocket at WSPath.
const refusedNotWebSocket = "not_websocket"

// newWSGate is the WebSocket listener: the TCP gate's limits, counters
// and login timeout (one budget per address across both listeners), with
// an HTTP upgrade before the CONNECT, both within the login timeout.
// Browsers send cookies to any port of a host, but the broker reads none:
// a client is who its MQTT login says, so any origin may connect.
func newWSGate(tcp *gate, address string) *gate {
	g := &gate{id: "ws", address: address, timeout: tcp.timeout, conns: tcp.conns, loggedIn: tcp.loggedIn,
		failures: tcp.failures, refused: tcp.refused, ended: tcp.ended, log: tcp.log, waiting: map[net.Conn]struct{}{}}
	up := &websocket.Upgrader{
		Subprotocols:    []string{"mqtt"},
		CheckOrigin:     func(*http.Request) bool { return true },
		ReadBufferSize:  4 << 10,
		WriteBufferSize: 4 << 10,
	}
	g.upgrade = func(c net.Conn) (net.Conn, error) { return upgradeConn(up, c) }
	return g
}

// upgradeConn reads one HTTP request from c and upgrades it to a
// WebSocket, answering anything else with an HTTP error.
func upgradeConn(up *websocket.Upgrader, c net.Conn) (net.Conn, error) {
	br := bufio.NewReaderSize(c, 4<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("reading the upgrade request: %w", err)
	}
	w := &hijackWriter{conn: c, br: br, header: http.Header{}}
	if req.URL.Path != WSPath {
		http.Error(w, "MQTT over WebSocket is at "+WSPath, http.StatusNotFound)
		return nil, fmt.Errorf("upgrade asked at %q", req.URL.Path)
	}
	ws, err := up.Upgrade(w, req, nil)
	if err != nil {
		return nil, err // the Upgrader answered the client
	}
	ws.SetReadLimit(MaxPacketBytes + maxRemainingLengthBytes + 1)
	return &wsConn{ws: ws}, nil
}

// hijackWriter is the http.ResponseWriter of the one request upgradeConn
// reads: an error answer, or the connection itself for the Upgrader.
type hijackWriter struct {
	conn     net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	hijacked bool
}

func (w *hijackWriter) Header() http.Header { return w.header }

func (w *hijackWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
		fmt.Fprintf(w.conn, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\n\r\n",
			status, http.StatusText(status), w.header.Get("Content-Type"))
	}
}

func (w *hijackWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.conn.Write(p)
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked || w.status != 0 {
		return nil, nil, errors.New("connection already answered")
	}
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriter(w.conn)), nil
}

// wsConn is a WebSocket as the byte stream mochi reads MQTT from: binary
// messages, one after another; each write a message of its own.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read; nil between messages
	mu sync.Mutex
}

var errTextMessage = errors.New("MQTT over WebSocket takes binary messages only")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				// gorilla/websocket hides the deadline behind an error
				// of its own; the gate tells a login timeout by it.
				return 0, fmt.Errorf("%w: %v", os.ErrDeadlineExceeded, err)
			}
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                      { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline holds the write lock: gorilla/websocket allows one
// writer at a time, and its write deadline is writer state (mochi sets
// deadlines from the gate's goroutine while a closing broker writes a
// DISCONNECT from another).
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws.SetWriteDeadline(t)
}

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.SetWriteDeadline(t))
}
