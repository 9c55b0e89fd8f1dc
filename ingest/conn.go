package ingest

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// maxPendingWrite bounds what bufferedConn holds unsent; a Write beyond it
// waits for the socket (backpressure, never an unbounded buffer).
const maxPendingWrite = 64 << 10

// bufferedConn batches ingest's side of the MQTT connection. paho reads
// each packet with several small reads (the fixed header a byte at a time)
// and writes each PUBACK with its own write: measured, those system calls
// were the largest share of ingest's CPU time per reading. Reads go through
// a buffer; writes are queued and sent by one flusher, so that the PUBACKs
// written while a send is under way leave together in the next one.
//
// A Write therefore returns before its bytes are on the wire. For PUBACKs
// that is harmless: one lost with the connection means a redelivery, which
// JetStream's message id collapses. Close sends what is queued first, so a
// DISCONNECT still follows the acknowledgements before it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu       sync.Mutex
	cond     *sync.Cond // signalled when a flush finishes a batch
	pending  []byte     // queued, not yet handed to the socket
	spare    []byte
	flushing bool
	err      error // the first write error, returned by later Writes
}

func newBufferedConn(conn net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 32<<10)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) >= maxPendingWrite {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, p...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	return len(p), nil
}

// flush sends queued bytes until none are left.
func (c *bufferedConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) > 0 && c.err == nil {
		buf := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
	c.pending = c.pending[:0]
	c.flushing = false
	c.cond.Broadcast()
}

// Close sends what is queued, giving a stuck socket two seconds, then
// closes the connection.
func (c *bufferedConn) Close() error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.mu.Lock()
	for c.flushing {
		c.cond.Wait()
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// dialBuffered opens plain TCP connections (tcp:// and mqtt://) as a
// bufferedConn; paho dials the other schemes itself.
func dialBuffered(uri *url.URL, opts mqtt.ClientOptions) (net.Conn, error) {
	d := net.Dialer{Timeout: opts.ConnectTimeout}
	conn, err := d.Dial("tcp", uri.Host)
	if err != nil {
		return nil, fmt.Errorf("dialing MQTT broker %s: %w", uri.Host, err)
	}
	return newBufferedConn(conn), nil
}

// plainTCP reports whether broker is a URL paho would dial as plain TCP.
func plainTCP(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt")
}
