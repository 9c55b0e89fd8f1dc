package connlimit

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultLogInterval is how often a Tally logs one kind of event at most.
const DefaultLogInterval = 10 * time.Second

// Tally counts events of a listener by kind (a refused connection, a failed
// login), as a Prometheus counter with a reason label, and logs them rate
// limited: the first of a kind at once, then at most one line per kind per
// interval with how many there were and the last address. It is a
// prometheus.Collector of its counter.
type Tally struct {
	msg      string
	log      *slog.Logger
	interval time.Duration
	counter  *prometheus.CounterVec

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	logged   time.Time   // when the last line of this kind was written
	pending  uint64      // events since, not yet in a line
	lastAddr string      // of the last event
	total    uint64      // events ever
	flush    *time.Timer // writes the pending line at the interval's end
}

// NewTally returns a Tally whose counter is name (with help, and the label
// reason) and whose log lines say msg, e.g. "MQTT connection refused".
// Reasons listed are exported at 0 before their first event.
func NewTally(name, help, msg string, log *slog.Logger, reasons ...string) *Tally {
	t := &Tally{
		msg: msg, log: log, interval: DefaultLogInterval,
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"reason"}),
		kinds:   map[string]*kind{},
	}
	for _, r := range reasons {
		t.counter.WithLabelValues(r)
	}
	return t
}

// SetLogInterval changes how often one kind is logged at most (tests).
func (t *Tally) SetLogInterval(d time.Duration) {
	t.mu.Lock()
	t.interval = d
	t.mu.Unlock()
}

// Add counts one event of reason, from addr.
func (t *Tally) Add(reason, addr string) {
	t.counter.WithLabelValues(reason).Inc()
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[reason]
	if k == nil {
		k = &kind{}
		t.kinds[reason] = k
	}
	k.lastAddr = addr
	k.total++
	if now.Sub(k.logged) >= t.interval && k.pending == 0 {
		k.logged = now
		t.log.Warn(t.msg, "reason", reason, "from", addr, "count", 1)
		return
	}
	k.pending++
	if k.flush == nil {
		wait := t.interval - now.Sub(k.logged)
		k.flush = time.AfterFunc(max(wait, 0), func() { t.flushKind(reason) })
	}
}

// flushKind writes the line of reason's events since its last line.
func (t *Tally) flushKind(reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[reason]
	k.flush = nil
	if k.pending == 0 {
		return
	}
	t.log.Warn(t.msg, "reason", reason, "from", k.lastAddr, "count", k.pending, "over", t.interval.String())
	k.pending = 0
	k.logged = time.Now()
}

// Count is how many events of reason were counted.
func (t *Tally) Count(reason string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := t.kinds[reason]; k != nil {
		return k.total
	}
	return 0
}

// Describe and Collect make a Tally a prometheus.Collector of its counter.
func (t *Tally) Describe(ch chan<- *prometheus.Desc) { t.counter.Describe(ch) }
func (t *Tally) Collect(ch chan<- prometheus.Metric) { t.counter.Collect(ch) }
