package ingest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
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

// TestBufferedConnFailsWhenThePeerStopsReading: writers do not wait for the
// socket, so the flusher's own timeout is what notices a peer that stopped
// reading (a hung NATS server or broker). Once the socket's buffers are
// full and a send has waited longer than the timeout, Write fails, and the
// client reconnects.
func TestBufferedConnFailsWhenThePeerStopsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // never read
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	peer := <-accepted
	defer peer.Close()

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
