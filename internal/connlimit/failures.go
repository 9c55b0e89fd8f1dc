package connlimit

import (
	"sync"
	"time"
)

// Bounds of failed logins, per client address (docs/SECURITY.md), for
// the embedded MQTT broker and the embedded NATS servers alike.
const (
	// DefaultMaxFailedLoginsPerIP failed logins from one address within
	// DefaultFailedLoginWindow make a listener refuse that address's new
	// logins for the rest of the window. A client that knows its
	// credential never fails, so this holds back password guessing and
	// the CPU its hashing costs, not the fleet; a venue's NAT shares one
	// address, so the bound is well above what a room mistypes.
	DefaultMaxFailedLoginsPerIP = 100
	DefaultFailedLoginWindow    = 10 * time.Second
	// maxFailureHosts bounds the addresses tracked at once. Policy when
	// full: addresses whose window has passed are dropped; if none has,
	// a new address is not tracked (counted, never refused) until one
	// has.
	maxFailureHosts = 10_000
)

// Failures counts failed logins per address in fixed windows, and says
// which addresses have used up their window's allowance. Safe for
// concurrent use.
type Failures struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	hosts map[string]*failureWindow
}

type failureWindow struct {
	start time.Time
	n     int
}

// NewFailures allows max failed logins per address within each window.
func NewFailures(max int, window time.Duration) *Failures {
	return &Failures{max: max, window: window, hosts: map[string]*failureWindow{}}
}

// Add counts a failed login from host at now.
func (f *Failures) Add(host string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.hosts[host]
	if !ok {
		if len(f.hosts) >= maxFailureHosts {
			for h, o := range f.hosts {
				if now.Sub(o.start) >= f.window {
					delete(f.hosts, h)
				}
			}
			if len(f.hosts) >= maxFailureHosts {
				return
			}
		}
		w = &failureWindow{start: now}
		f.hosts[host] = w
	}
	if now.Sub(w.start) >= f.window {
		w.start, w.n = now, 0
	}
	w.n++
}

// Blocked reports whether host has failed max times in its current window.
func (f *Failures) Blocked(host string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.hosts[host]
	if !ok {
		return false
	}
	if now.Sub(w.start) >= f.window {
		delete(f.hosts, host)
		return false
	}
	return w.n >= f.max
}
