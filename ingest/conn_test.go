package ingest

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// TestBufferedConnSendsEverythingInOrderBeforeClosing writes many small
// packets, as paho writes PUBACKs, then closes: the peer reads them all, in
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
