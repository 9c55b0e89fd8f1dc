package testharness

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// IdleConns opens n TCP connections to addr from the loopback address from
// (127.0.0.0/8 is all loopback on Linux, so a test can play other client
// addresses) that send nothing. They are closed when the test ends.
func IdleConns(t testing.TB, addr string, from net.IP, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d of %d to %s: %v", i+1, n, addr, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// WhenClosed waits until the server has closed each of conns, opened at
// opened, and counts those it closed within deadline/2 (at once) and the
// rest (at the deadline). A connection still open 2 s past the deadline
// fails the test.
func WhenClosed(t testing.TB, conns []net.Conn, opened time.Time, deadline time.Duration) (atOnce, atDeadline int) {
	t.Helper()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(opened.Add(deadline + 2*time.Second))
			_, err := io.ReadAll(c)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("idle connection %d still open %v after it was opened", i+1, time.Since(opened).Round(time.Millisecond))
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if time.Since(opened) < deadline/2 {
				atOnce++
			} else {
				atDeadline++
			}
		})
	}
	wg.Wait()
	return atOnce, atDeadline
}
