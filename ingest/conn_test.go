package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestBufferedConnSendsEverythingInOrderBeforeClosing writes many small
// packets, as the acker writes PUBACKs, then closes: the peer reads them all, in
// order, before the end of the stream.
func TestBufferedConnSendsEverythingInOrderBeforeClosing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBufferedConn(raw)
	var want bytes.Buffer
	for i := range 50000 { // over maxPendingWrite, so Write must wait too
		p := []byte{0x40, 0x02, byte(i >> 8), byte(i)}
		want.Write(p)
		if n, err := c.Write(p); n != 4 || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer read %d bytes, want %d in order", len(b), want.Len())
	}
	if _, err := c.Write([]byte{1}); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestBufferedConnClosesWithoutLosingItsLastWrites: when ingest closes the
// broker's connection, the broker has sent what ingest will never read (its
// next PUBLISHes) and has not read ingest's last writes yet (PUBACKs, the
// DISCONNECT). Closing with unread bytes sends a reset, on which Mosquitto
// drops the connection without reading the rest; with its linger, Close
// ends the stream instead and the peer reads everything, then the end.
func TestBufferedConnClosesWithoutLosingItsLastWrites(t *testing.T) {
	raw, peer := tcpPair(t)
	if _, err := peer.Write(make([]byte, 4096)); err != nil { // never read
		t.Fatal(err)
	}

	c := newBufferedConn(raw)
	c.linger = 30 * time.Second
	want := bytes.Repeat([]byte{0x40, 0x02, 0x00, 0x01}, 256)
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	// The peer reads only once this side has stopped sending.
	port := raw.LocalAddr().(*net.TCPAddr).Port
	testharness.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if tcpEstablished(t, port) {
			return fmt.Errorf("local port %d still established", port)
		}
		return nil
	})
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("the peer read %d of %d bytes, then: %v", len(got), len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the peer read %d bytes, want the %d written, in order", len(got), len(want))
	}
	peer.Close()
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
}

// tcpPair is a TCP connection on loopback and its peer's end, both closed
// when the test ends.
func tcpPair(t *testing.T) (ours, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	ours, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ours.Close() })
	if peer = <-accepted; peer == nil {
		t.Fatal("accepting the connection failed")
	}
	t.Cleanup(func() { peer.Close() })
	return ours, peer
}

// tcpEstablished reports whether the local TCP port on 127.0.0.1 has a
// connection in the ESTABLISHED state (Linux's /proc/net/tcp, state 01).
func tcpEstablished(t *testing.T, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == local && f[3] == "01" {
			return true
		}
	}
	return false
}

// TestBufferedConnFailsWhenThePeerStopsReading: writers do not wait for the
// socket, so the flusher's own timeout is what notices a peer that stopped
// reading (a hung NATS server or broker). Once the socket's buffers are
// full and a send has waited longer than the timeout, Write fails, and the
// client reconnects.
func TestBufferedConnFailsWhenThePeerStopsReading(t *testing.T) {
	raw, _ := tcpPair(t) // the peer never reads

	c := newBufferedConn(raw)
	c.timeout = 200 * time.Millisecond
	// The NATS client clears its own write deadline after each write, at
	// any moment from the flusher's point of view; that must not clear the
	// flusher's deadline.
	failed, done := make(chan error, 1), make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				_ = c.SetWriteDeadline(time.Time{})
				runtime.Gosched()
			}
		}
	}()
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				failed <- err
				return
			}
		}
	}()
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("write failed with %v, want the flusher's deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writes to a peer that never reads still succeed after 30s")
	}
}
