package stream

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Link is a TCP relay that can be cut: Cut drops its connections and
// refuses new ones until Heal, while both ends keep running. The demo puts
// one in each ingest's MQTT connection (the kill-ingest scenario), tests in
// other connections they fail on purpose. A region's link to the hub is
// cut by nats-server itself instead (LeafLink), except in compose, where
// the relay service (package control) holds a Link in each connection a
// scenario cuts.
type Link struct {
	region string
	target string
	ln     net.Listener
	log    *slog.Logger

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	done  bool
}

// NewLink listens on a free loopback port and relays to target.
func NewLink(region, target string, log *slog.Logger) (*Link, error) {
	return ListenLink(region, "127.0.0.1:0", target, log)
}

// ServeLink relays each connection ln accepts to target; name says which
// link it is in its log lines. Closing the Link closes ln.
func ServeLink(name string, ln net.Listener, target string, log *slog.Logger) *Link {
	l := &Link{region: name, target: target, ln: ln, log: log, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l
}

// ListenLink listens on listen and relays each connection to target.
func ListenLink(name, listen, target string, log *slog.Logger) (*Link, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("link %s: listening on %s: %w", name, listen, err)
	}
	return ServeLink(name, ln, target, log), nil
}

// Addr is where the link's clients dial.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Cut severs the link until Heal.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return
	}
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
	l.log.Warn("link cut", "link", l.region)
}

// Heal lets the region reconnect.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cut {
		return
	}
	l.cut = false
	l.log.Info("link healed", "link", l.region)
}

// IsCut reports whether the link is cut.
func (l *Link) IsCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Close stops the relay and waits for its goroutines.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return nil
	}
	l.done = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		in, err := l.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.log.Error("link accept", "region", l.region, "err", err)
			}
			return
		}
		if !l.track(in) {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", l.target)
		if err != nil {
			l.untrack(in)
			in.Close()
			continue
		}
		if !l.track(out) {
			l.untrack(in)
			in.Close()
			out.Close()
			continue
		}
		l.wg.Add(2)
		go l.pipe(in, out)
		go l.pipe(out, in)
	}
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut || l.done {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// pipe copies one direction; when either side ends, both are closed.
func (l *Link) pipe(dst, src net.Conn) {
	defer l.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	l.untrack(dst)
	l.untrack(src)
}
