package ingest

import (
	"bufio"
	"io"
	"net"
	"sync"
	"time"
)

// maxPendingWrite bounds what bufferedConn holds unsent; a Write beyond it
// waits for the socket (backpressure, never an unbounded buffer).
const maxPendingWrite = 64 << 10

// flushLinger is how long a flush waits for more writes to join it before
// it sends: the PUBACKs to the broker and the publishes to JetStream that
// arrive within it leave in one system call, and the peer reads them with
// one. It adds at most that much to a reading's way into JetStream (whose
// budget is seconds) and takes write and read calls, the largest share of
// ingest's CPU time per reading, from one per small batch to about one per
// millisecond under load (docs/INGEST.md).
const flushLinger = time.Millisecond

// closeLinger bounds how long closing the broker's connection waits for
// the broker to close its side once ingest has shut down its own
// (bufferedConn.Close).
const closeLinger = time.Second

// flushTimeout bounds one write to the socket. Writers do not wait for the
// socket (their deadlines would not apply to a later flush), so the flusher
// keeps its own; when it passes, the connection fails and its client
// reconnects.
const flushTimeout = 10 * time.Second

// bufferedConn batches ingest's side of a connection: to the MQTT broker
// and to NATS. paho reads each packet's header a byte at a time from its
// connection and writes each PUBACK on its own, and the NATS client writes
// whatever it has each time it gets to run: measured, those system calls
// were the largest share of ingest's CPU time per reading. Reads go
// through a buffer; writes are queued and sent by one
// flusher, which lingers for flushLinger first, so that what is written
// meanwhile leaves in the same send. Measured in one run, alternating
// binaries (BenchmarkIngestShareOfBrokerCeiling, 8 rounds, 2026-12-07,
// docs/INGEST.md): ingest needs 13.7 µs of CPU and 0.06 system calls per
// reading with it, 23.5 µs and 5.0 without it on paho's connection (72 %
// more), 28.0 µs and 5.6 without it on either connection (105 % more).
//
// A Write therefore returns before its bytes are on the wire. For PUBACKs
// that is harmless: one lost with the connection means a redelivery, which
// JetStream's message id collapses. A publish lost with the connection gets
// no PubAck and is published again. Close sends what is queued first, so a
// DISCONNECT still follows the acknowledgements before it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu       sync.Mutex
	cond     *sync.Cond // signalled when a flush finishes a batch
	pending  []byte     // queued, not yet handed to the socket
	spare    []byte
	flushing bool
	err      error         // the first write error, returned by later Writes
	timeout  time.Duration // bounds each send: flushTimeout
	// linger, when set, makes Close half-close and wait for the peer
	// first (closeLinger for the broker's connection).
	linger    time.Duration
	closeOnce sync.Once
	closeErr  error
}

func newBufferedConn(conn net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 32<<10), timeout: flushTimeout}
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

// flush sends queued bytes until none are left, lingering before each
// send for more to join it.
func (c *bufferedConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) > 0 && c.err == nil {
		c.mu.Unlock()
		time.Sleep(flushLinger)
		c.mu.Lock()
		buf := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
	c.pending = c.pending[:0]
	c.flushing = false
	c.cond.Broadcast()
}

// SetWriteDeadline is a no-op: a Write only queues, and the flusher bounds
// each send with flushTimeout. (The NATS client sets a deadline around
// each of its writes and clears it after, which would otherwise clear the
// flusher's.)
func (c *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline; see SetWriteDeadline.
func (c *bufferedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// Close sends what is queued, giving a stuck socket flushTimeout, then
// closes the connection. Later and concurrent calls (paho closes its
// connection twice on Disconnect) wait for the first and return its error.
//
// With a linger, Close first shuts down the sending side and reads,
// discarding, until the peer closes its side or the linger passes. A
// socket closed while bytes it received are unread (the broker's next
// PUBLISHes, sent before it read the DISCONNECT) sends a reset instead of
// the end of the stream (RFC 1122, 4.2.2.13). Mosquitto 2.0.11 then drops
// the connection without reading what was left in it, the last PUBACKs
// and the DISCONNECT (its log shows neither), and redelivers messages
// JetStream already held. Seen in
// TestInstancesShareTheLoadWithoutLossOrDoubles under CPU load and shown
// by TestBufferedConnClosesWithoutLosingItsLastWrites.
func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		c.drain()
		if c.linger > 0 {
			c.awaitPeerClose()
		}
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// awaitPeerClose half-closes the connection and reads until the peer
// closes or c.linger passes. A TLS connection sends its close_notify
// instead; the broker answers it by closing.
func (c *bufferedConn) awaitPeerClose() {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.Conn.SetReadDeadline(time.Now().Add(c.linger)) != nil {
		return
	}
	_, _ = io.Copy(io.Discard, c.Conn)
}

// CloseWrite sends what is queued, then shuts down the sending side only
// (a FIN): reads go on until the peer closes its side.
func (c *bufferedConn) CloseWrite() error {
	c.drain()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// drain waits until what is queued has been sent, and refuses later writes.
func (c *bufferedConn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.flushing {
		c.cond.Wait()
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
}

// natsDialer opens ingest's NATS connections as bufferedConns.
type natsDialer struct{ net.Dialer }

func (d *natsDialer) Dial(network, address string) (net.Conn, error) {
	conn, err := d.Dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return newBufferedConn(conn), nil
}
