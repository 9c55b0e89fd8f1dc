package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Bounds of the HTTP API's ledger and history queries, which ClickHouse
// runs beside the writer's inserts. Without them 64 callers of
// /api/ledger held every connection of the inserts' pool and both of the
// machine's cores: inserts took over a second instead of 20-50 ms, and
// the backlog grew (docs/STORAGE.md, "Reads beside the writer").
const (
	// readConns is the size (open and idle) of the ledger's connection
	// pool: one per query slot, so a query given a slot never waits for a
	// connection. The history has a pool of this size too, as its own
	// user (DialHistory).
	readConns = 2
	// readSlots is how many ledger and history queries a Writer runs at
	// once, both kinds together: a history still answers while a ledger
	// runs.
	readSlots = 2
	// readMaxThreads is ClickHouse's max_threads for a ledger query. By
	// default a query takes every core: on 2 cores, a ledger a second over
	// 600,000 rows took the p99 of the inserts beside it from about 50 ms
	// to 300 ms; on one thread, to 90 ms (TestLedgerQueriesDoNotSlowInserts
	// with readers 5 times as fast). The ledger takes longer and leaves
	// the other cores to the inserts.
	readMaxThreads = 1
	// readSlotWait is how long a query waits for a slot before its callers
	// are answered busy (policy: reject when full after the wait). Longer
	// than a ledger query takes on a loaded demo, shorter than a client
	// waits.
	readSlotWait = 2 * time.Second
	// readCacheAge is how long an answer is given again to identical
	// requests instead of querying again: a crowd polling the same ledger
	// costs one query a second.
	readCacheAge = time.Second
	// readQueryTimeout bounds one ledger or history query, wait for its
	// slot included.
	readQueryTimeout = 10 * time.Second
	// busyRetryAfter is the Retry-After, in seconds, of a busy answer: by
	// then an identical request is likely answered from the cache.
	busyRetryAfter = "1"
)

// ErrBusy is returned, wrapped, by Writer.Ledger and Writer.History when
// every query slot stayed taken for readSlotWait. The HTTP API answers it
// 503 with Retry-After.
var ErrBusy = errors.New("busy, try again")

// readPool runs the ledger and history queries apart from the inserts:
// on connections of their own (conn for the ledger; the history user's
// Writer.hconn for the history), at most readSlots at once, and each
// distinct query at most once per readCacheAge however many ask.
type readPool struct {
	// conn is the ledger's: the writer's user, with readonly=1 and
	// readMaxThreads on every query it sends.
	conn  driver.Conn
	slots chan struct{} // a token per query running
	wait  time.Duration // readSlotWait; tests shorten it

	flight singleflight.Group // one query at a time per key
	mu     sync.Mutex
	cache  map[string]cachedAnswer // answers younger than readCacheAge

	busy *prometheus.CounterVec
	// queries counts the queries run, not those answered from the cache
	// or from another caller's query (tests read it).
	queries atomic.Uint64
}

type cachedAnswer struct {
	a  *answer
	at time.Time // when its query returned
}

// answer is a query's result as the read pool shares it between callers:
// val must not be modified; json is its HTTP body, encoded once for all of
// them.
type answer struct {
	val  any
	json func() []byte
}

func newAnswer(val, body any) *answer {
	return &answer{val: val, json: sync.OnceValue(func() []byte {
		b, err := json.Marshal(body)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": err.Error()})
		}
		return append(b, '\n')
	})}
}

// newReadPool opens the ledger's connection pool (it does not connect
// yet) and registers telemetry_storage_api_busy_total on reg.
//
// clickhouse-go sends Options.Settings with every query of the pool, so
// they hold per connection pool, not per user. readonly=1 makes
// ClickHouse refuse the pool any write or DDL although the user may. Sent
// with the query, it does not forbid the query's other settings
// (max_threads, and max_execution_time, which clickhouse-go adds for a
// context with a deadline): ClickHouse checks a query's settings against
// those in force before it (18.16, measured; current releases,
// SettingsConstraints::check). The history's pool cannot take settings:
// its user's profile is readonly=1 already, which forbids them.
func newReadPool(cfg Config, reg prometheus.Registerer) (*readPool, error) {
	settings := clickhouse.Settings{"readonly": 1, "max_threads": readMaxThreads}
	conn, err := dial(cfg, cfg.ClickHouseUser, cfg.ClickHousePassword, readConns, settings)
	if err != nil {
		return nil, err
	}
	busy := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "telemetry_storage_api_busy_total",
		Help: "Ledger and history requests answered 503 busy: every query slot stayed taken for the wait (policy: reject when full after the wait).",
	}, []string{"api"})
	busy.WithLabelValues("ledger")
	busy.WithLabelValues("history")
	reg.MustRegister(busy)
	return &readPool{
		conn:  conn,
		slots: make(chan struct{}, readSlots),
		wait:  readSlotWait,
		cache: map[string]cachedAnswer{},
		busy:  busy,
	}, nil
}

// do answers the query of api named key with an answer at most
// readCacheAge old: from the cache, from an identical query under way, or
// by running query once a slot is free. The query runs on its own context
// (readQueryTimeout, not ctx's cancellation): other callers may be waiting
// for it. A caller whose ctx ends stops waiting.
func (p *readPool) do(ctx context.Context, api, key string, query func(context.Context) (*answer, error)) (*answer, error) {
	key = api + "\x00" + key
	if a, ok := p.cached(key); ok {
		return a, nil
	}
	ch := p.flight.DoChan(key, func() (any, error) {
		// An identical query may have ended since the look above.
		if a, ok := p.cached(key); ok {
			return a, nil
		}
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readQueryTimeout)
		defer cancel()
		if !p.acquire(qctx) {
			return nil, fmt.Errorf("%s %w", api, ErrBusy)
		}
		defer func() { <-p.slots }()
		p.queries.Add(1)
		a, err := query(qctx)
		if err != nil {
			return nil, err
		}
		p.store(key, a)
		return a, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			if errors.Is(r.Err, ErrBusy) {
				p.busy.WithLabelValues(api).Inc()
			}
			return nil, r.Err
		}
		return r.Val.(*answer), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", api, ctx.Err())
	}
}

// acquire takes a query slot, waiting at most p.wait.
func (p *readPool) acquire(ctx context.Context) bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (p *readPool) cached(key string) (*answer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cache[key]
	if !ok || time.Since(c.at) >= readCacheAge {
		return nil, false
	}
	return c.a, true
}

// store caches a under key and drops the answers too old to give: the
// cache holds only what the last readCacheAge of queries returned.
func (p *readPool) store(key string, a *answer) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.cache {
		if now.Sub(c.at) >= readCacheAge {
			delete(p.cache, k)
		}
	}
	p.cache[key] = cachedAnswer{a: a, at: now}
}

func (p *readPool) close() error { return p.conn.Close() }
