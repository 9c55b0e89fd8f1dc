package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

// States of the writer, as /api/status reports them.
const (
	StateStarting   = "starting"   // Run has not set up yet
	StateConnecting = "connecting" // migrating ClickHouse or creating the consumer, retried
	StateOK         = "ok"         // storing (or idle with nothing to store)
	StateRetrying   = "retrying"   // an insert failed; retried, nothing acknowledged meanwhile
	StateNATSDown   = "nats_down"  // fetching from JetStream fails; retried
	StateStopped    = "stopped"    // Run has returned
)

// Status is the writer's state, served as JSON at /api/status. Counts are
// since the writer started. RowsStored and ReadingsStored count what was
// inserted; copies kept out of inserts count in DuplicatesDropped instead.
type Status struct {
	State             string `json:"state"`
	RowsStored        uint64 `json:"rows_stored"`
	ReadingsStored    uint64 `json:"readings_stored"`
	DuplicatesDropped uint64 `json:"duplicates_dropped"` // copies in a batch, or stored already
	DecodeErrors      uint64 `json:"decode_errors"`
	// Discarded counts readings READINGS dropped before the writer read
	// them: storage was behind by more than the stream's budget (or its
	// max age), and the oldest readings made room for new ones. Each is
	// lost; the ledger lists them by device. Found as gaps in the stream
	// sequence the consumer delivers, in the region consumed.
	Discarded       uint64 `json:"discarded"`
	LastInsert      string `json:"last_insert"`      // RFC 3339; empty before the first insert
	ConsumerPending uint64 `json:"consumer_pending"` // in the stream, not yet stored: undelivered plus unacknowledged
	Error           string `json:"error"`            // why the state is not ok; empty when it is
	// Region is the region whose READINGS the writer consumes: HomeRegion
	// (Config.Domain), or a fallback while that is gone. Failovers counts
	// the changes of region, moves back home included.
	Region     string `json:"region"`
	HomeRegion string `json:"home_region"`
	Failovers  uint64 `json:"failovers"`
	// ClickHouse is the native address the writer stores to, so that a
	// load test on the same machine finds the demo's ClickHouse (started
	// on a free port) without being told.
	ClickHouse string `json:"clickhouse"`
}

// Writer consumes a region's READINGS stream and stores the readings in
// ClickHouse, acknowledging each only once its rows are inserted.
type Writer struct {
	cfg Config
	// perMsg is the most readings one message of the last fetch carried;
	// the consume loop alone uses it.
	perMsg  int
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics

	conn driver.Conn
	// hconn is the read-only user's connection, for /api/history only.
	hconn driver.Conn
	// reads runs the ledger and history queries apart from the inserts,
	// the ledger on a read-only connection of its own (readpool.go).
	reads *readPool
	nc    *nats.Conn
	js    jetstream.JetStream
	ln    *httpserv.Listener // nil with NoListen

	fo failover // the regions it can consume from (failover.go)

	// seen is the highest stream sequence the current consumer has
	// delivered, 0 while unknown (consume goroutine only).
	seen uint64

	mu     sync.Mutex
	status Status

	closeOnce sync.Once
	closeErr  error
}

// New checks cfg, binds the HTTP address and prepares the connections.
// Neither NATS nor ClickHouse need to be up yet: Run waits for them.
func New(cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log = log.With("component", "storage")
	reg := prometheus.NewRegistry()
	var r prometheus.Registerer = reg
	if cfg.Instance != "" {
		log = log.With("writer", cfg.Instance)
		r = prometheus.WrapRegistererWith(prometheus.Labels{"writer": cfg.Instance}, reg)
	}
	w := &Writer{
		cfg:     cfg,
		log:     log,
		reg:     reg,
		metrics: newMetrics(r),
		status:  Status{State: StateStarting},
	}
	w.fo.initMetrics(r)
	conn, err := Dial(cfg)
	if err != nil {
		return nil, err
	}
	w.conn = conn
	if w.hconn, err = DialHistory(cfg); err != nil {
		conn.Close()
		return nil, err
	}
	if w.reads, err = newReadPool(cfg, r); err != nil {
		conn.Close()
		w.hconn.Close()
		return nil, err
	}
	nc, err := w.connect(cfg.Domain, cfg.NATSURL)
	if err != nil {
		conn.Close()
		w.hconn.Close()
		w.reads.close()
		return nil, err
	}
	w.nc = nc
	if w.js, err = jetstream.NewWithDomain(nc, cfg.Domain); err != nil {
		w.Close()
		return nil, fmt.Errorf("storage: jetstream domain %s: %w", cfg.Domain, err)
	}
	w.initSites(w.nc, w.js)
	if cfg.Listen != NoListen {
		if w.ln, err = httpserv.Listen(cfg.Listen, httpserv.ServiceLimits, w.log); err != nil {
			w.Close()
			return nil, fmt.Errorf("storage: %w", err)
		}
		w.reg.MustRegister(w.ln.Refused)
	}
	return w, nil
}

// Dial opens a connection pool to cfg's ClickHouse, native protocol, as the
// writer's user. Like clickhouse.Open it does not connect yet. The bench
// command uses it with Ledger.
func Dial(cfg Config) (driver.Conn, error) {
	cfg = cfg.withDefaults()
	var settings clickhouse.Settings
	if cfg.Cluster != "" {
		// An insert into a Distributed table returns once every shard's
		// replica took its rows, not once they are queued on the server
		// the writer talks to (that server dying would lose them).
		settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	return dial(cfg, cfg.ClickHouseUser, cfg.ClickHousePassword, 4, settings)
}

// DialHistory is Dial as the read-only history user (Config.HistoryUser),
// whose connection serves QueryHistory.
func DialHistory(cfg Config) (driver.Conn, error) {
	cfg = cfg.withDefaults()
	return dial(cfg, cfg.HistoryUser, cfg.HistoryPassword, readConns, nil)
}

// dial opens a pool of conns connections as user; settings go with every
// query.
func dial(cfg Config, user, password string, conns int, settings clickhouse.Settings) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol: clickhouse.Native,
		Addr:     clickHouseAddrs(cfg.ClickHouseAddr),
		// No database: the server's default one, which the users may not
		// be allowed to use (ClickHouse refuses the login then). Every
		// query names its tables' database.
		Auth:         clickhouse.Auth{Username: user, Password: password},
		DialTimeout:  5 * time.Second,
		ReadTimeout:  30 * time.Second,
		MaxOpenConns: conns,
		MaxIdleConns: 2,
		Settings:     settings,
		ClientInfo:   clickhouse.ClientInfo{Products: []struct{ Name, Version string }{{Name: "telemetry-storage", Version: "1"}}},
	})
	if err != nil {
		return nil, fmt.Errorf("storage: ClickHouse at %s as %s: %w", cfg.ClickHouseAddr, user, err)
	}
	return conn, nil
}

// Addr is the HTTP server's address, or "" with NoListen.
func (w *Writer) Addr() string {
	if w.ln == nil {
		return ""
	}
	return w.ln.Addr().String()
}

// Registry holds the writer's metrics (telemetry_storage_*), without Go
// runtime collectors, so that the demo can serve it beside others.
func (w *Writer) Registry() *prometheus.Registry { return w.reg }

// Status returns the current state.
func (w *Writer) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.ClickHouse = w.cfg.ClickHouseAddr
	return st
}

// setState records the state and logs changes of it.
func (w *Writer) setState(state string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	w.mu.Lock()
	prev := w.status.State
	w.status.State, w.status.Error = state, msg
	w.mu.Unlock()
	if prev != state {
		if state == StateOK || state == StateStopped {
			w.log.Info("storage state", "state", state, "was", prev)
		} else {
			w.log.Warn("storage state", "state", state, "was", prev, "err", msg)
		}
	}
}

// Run stores readings until ctx is cancelled, then stores or hands back the
// batch in hand (see Config.DrainTimeout) and returns. It also serves HTTP
// unless Config.Listen is NoListen. Call it once.
func (w *Writer) Run(ctx context.Context) error {
	defer w.setState(StateStopped, nil)
	g, gctx := errgroup.WithContext(ctx)
	if w.ln != nil {
		ln := w.ln
		g.Go(func() error { return httpserv.Serve(gctx, ln, w.Handler(), w.log) })
	}
	g.Go(func() error { w.pollPending(gctx); return nil })
	g.Go(func() error { w.probeHome(gctx); return nil })
	g.Go(func() error { return w.consume(gctx) })
	return g.Wait()
}

// Close releases the connections. Call it after Run has returned; calling
// it again does nothing.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		if w.fo.sites != nil {
			w.closeSites()
		}
		if w.nc != nil {
			// Send the last acknowledgements before closing; if NATS is
			// away they are lost and the readings come again, harmlessly.
			_ = w.nc.FlushTimeout(2 * time.Second)
			w.nc.Close()
		}
		if w.conn != nil {
			w.closeErr = w.conn.Close()
		}
		if w.hconn != nil {
			w.hconn.Close()
		}
		if w.reads != nil {
			w.reads.close()
		}
		if w.ln != nil {
			w.ln.Close() // already closed if Run served it
		}
	})
	return w.closeErr
}

// pollPending asks JetStream for the consumer's backlog every
// PendingInterval until ctx ends.
func (w *Writer) pollPending(ctx context.Context) {
	t := time.NewTicker(w.cfg.PendingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, w.cfg.PendingInterval)
		c, err := w.current().js.Consumer(rctx, w.cfg.Stream, w.cfg.Durable)
		cancel()
		if err != nil {
			continue // not created yet, or NATS away: the state says why
		}
		info := c.CachedInfo()
		n := info.NumPending + uint64(info.NumAckPending)
		w.metrics.pending.Set(float64(n))
		w.mu.Lock()
		w.status.ConsumerPending = n
		w.mu.Unlock()
	}
}
