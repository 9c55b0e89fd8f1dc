package connlimit

import (
	"net"
	"sync"
)

// Reasons a Tracker refuses a connection, as the reason label of the
// listeners' refusal counters.
const (
	ReasonTooMany            = "too_many"              // the listener holds Limits.Total connections
	ReasonTooManyFromAddress = "too_many_from_address" // the client's address holds Limits.PerAddr
)

// Limits bounds connections held at once; 0 is no bound.
type Limits struct {
	Total   int // from every address
	PerAddr int // from one client address (IP, without the port)
}

// Tracker counts connections held, in total and by client address, against
// Limits. It is safe for concurrent use.
type Tracker struct {
	limits Limits

	mu     sync.Mutex
	total  int
	byAddr map[string]int
}

// NewTracker returns a Tracker of limits.
func NewTracker(limits Limits) *Tracker {
	return &Tracker{limits: limits, byAddr: map[string]int{}}
}

// Acquire counts one more connection from addr (an IP) and returns "", or
// counts nothing and returns the reason it is refused.
func (t *Tracker) Acquire(addr string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.limits.Total > 0 && t.total >= t.limits.Total:
		return ReasonTooMany
	case t.limits.PerAddr > 0 && t.byAddr[addr] >= t.limits.PerAddr:
		return ReasonTooManyFromAddress
	}
	t.total++
	t.byAddr[addr]++
	return ""
}

// Release uncounts a connection from addr that Acquire counted.
func (t *Tracker) Release(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if t.byAddr[addr]--; t.byAddr[addr] <= 0 {
		delete(t.byAddr, addr)
	}
}

// Held is the number of connections counted now.
func (t *Tracker) Held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Host is the IP of a connection's remote address, the key of the
// per-address limits; "" for none (a connection already closed).
func Host(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	return HostOf(addr.String())
}

// HostOf is the host of "host:port" (an http.Request's RemoteAddr, the
// address in a server's log line), or hostport itself if it has no port.
func HostOf(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return host
}

// listener is Listen's net.Listener.
type listener struct {
	net.Listener
	t     *Tracker
	tally *Tally
}

// Listen wraps ln so that it holds at most limits' connections: one more
// is closed as it is accepted, and counted and logged in tally under the
// reason (ReasonTooMany, ReasonTooManyFromAddress). A connection accepted
// counts until it is closed.
func Listen(ln net.Listener, limits Limits, tally *Tally) net.Listener {
	return &listener{Listener: ln, t: NewTracker(limits), tally: tally}
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := Host(c.RemoteAddr())
		if reason := l.t.Acquire(host); reason != "" {
			l.tally.Add(reason, host) // before the client can see the close
			_ = c.Close()
			continue
		}
		return Release(c, func() { l.t.Release(host) }), nil
	}
}

// Release returns c, whose Close also calls release, once.
func Release(c net.Conn, release func()) net.Conn {
	return &trackedConn{Conn: c, release: release}
}

type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
