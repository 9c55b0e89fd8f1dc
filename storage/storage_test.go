package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

const region = "us-east"

// env is a real ClickHouse and a real JetStream with a READINGS stream.
type env struct {
	ch   *chserver.Server // nil on a cluster
	url  string
	js   jetstream.JetStream
	conn driver.Conn // the writer's user; through Distributed tables on a cluster
	// chAddr and cluster are the writer's Config.ClickHouseAddr and
	// Config.Cluster.
	chAddr, cluster string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ch := testharness.ClickHouse(t)
	e := newEnvOn(t, ch.Addr(), "")
	e.ch = ch
	return e
}

// newEnvOn is an env whose ClickHouse is at chAddr, a server or the
// members of cluster.
func newEnvOn(t *testing.T, chAddr, cluster string) *env {
	t.Helper()
	_, url := testharness.NATS(t, region)
	nc := testharness.Connect(t, url)
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       storage.DefaultStream,
		Subjects:   []string{"telemetry." + region + ".>"},
		Duplicates: time.Minute,
	}); err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: chAddr, Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{url: url, js: js, conn: conn, chAddr: chAddr, cluster: cluster}
}

// config is a writer's configuration for e, quick to flush and to retry.
func (e *env) config() storage.Config {
	return storage.Config{
		NATSURL:         e.url,
		Domain:          region,
		ClickHouseAddr:  e.chAddr,
		Cluster:         e.cluster,
		BatchSize:       100,
		FlushInterval:   100 * time.Millisecond,
		AckWait:         5 * time.Second,
		RetryBackoff:    50 * time.Millisecond,
		MaxRetryBackoff: 500 * time.Millisecond,
		DrainTimeout:    2 * time.Second,
		PendingInterval: 100 * time.Millisecond,
		Listen:          "127.0.0.1:0",
	}
}

// running is a writer whose Run goroutine the test owns.
type running struct {
	*storage.Writer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a writer until stop or the end of the test.
func start(t *testing.T, cfg storage.Config) *running {
	t.Helper()
	w, err := storage.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Writer: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run, checks that it returns nil in time, and closes.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return within 15s of cancel")
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

var metricNames = []string{"temperature_c", "humidity_pct", "battery_pct"}

// readings makes devices x perDevice readings, each with len(metricNames)
// metrics, seq 1..perDevice.
func readings(devices, perDevice int, boot uint64) []protocol.Reading {
	now := time.Now().UnixMilli()
	var out []protocol.Reading
	for d := range devices {
		for s := 1; s <= perDevice; s++ {
			r := protocol.Reading{Version: 1, Device: fmt.Sprintf("th-%03d", d), Boot: boot, Seq: uint64(s), TS: now - int64(perDevice-s)}
			for i, m := range metricNames {
				r.Metrics = append(r.Metrics, protocol.Metric{Name: m, Value: float64(s) + float64(i)/10})
			}
			out = append(out, r)
		}
	}
	return out
}

// publish stores rs in READINGS as ingest does: with the reading's id as
// Nats-Msg-Id unless withID is false.
func (e *env) publish(t *testing.T, rs []protocol.Reading, withID bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range rs {
		msg := nats.NewMsg("telemetry." + region + ".th." + r.Device)
		msg.Data = protocol.AppendEncode(nil, r)
		msg.Header.Set(protocol.HeaderReceived, strconv.FormatInt(time.Now().UnixMilli(), 10))
		if withID {
			msg.Header.Set(jetstream.MsgIDHeader, r.ID())
		}
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publishing %s: %v", r.ID(), err)
		}
	}
}

func (e *env) publishRaw(t *testing.T, subject string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.Publish(ctx, subject, body); err != nil {
		t.Fatalf("publishing to %s: %v", subject, err)
	}
}

func (e *env) count(t *testing.T, final bool) uint64 {
	t.Helper()
	n, err := e.tryCount(final)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) tryCount(final bool) (uint64, error) {
	q := "SELECT count() FROM telemetry.readings"
	if final {
		q += " FINAL"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := e.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	return n, nil
}

// waitStored polls until the FINAL count is want and the consumer has
// nothing pending.
func (e *env) waitStored(t *testing.T, w *running, want uint64) {
	t.Helper()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		n, err := e.tryCount(true)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d rows (FINAL), want %d; status %+v", n, want, w.Status())
		}
		if st := w.Status(); st.ConsumerPending != 0 || st.State != storage.StateOK {
			return fmt.Errorf("status %+v, want ok with nothing pending", st)
		}
		return nil
	})
}

// rollupCounts returns, per metric, the readings counted by the per-minute
// rollups.
func (e *env) rollupCounts(t *testing.T) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.conn.Query(ctx, "SELECT metric, countMerge(n) FROM telemetry.readings_1m GROUP BY metric")
	if err != nil {
		t.Fatalf("rollup counts: %v", err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var m string
		var n uint64
		if err := rows.Scan(&m, &n); err != nil {
			t.Fatal(err)
		}
		out[m] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkRollups fails unless the rollups come to count each metric of rs
// once. It waits, as a part of the rollups may commit just after the part
// of the readings that fed it; a count that overshoots never settles.
func (e *env) checkRollups(t *testing.T, readings int) {
	t.Helper()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		got := e.rollupCounts(t)
		for _, m := range metricNames {
			if got[m] != uint64(readings) {
				return fmt.Errorf("rollups count %d %s readings, want %d (all: %v)", got[m], m, readings, got)
			}
		}
		return nil
	})
}

// insertRows writes the rows of rs straight into the table, as a writer
// that died before acknowledging them would have.
func (e *env) insertRows(t *testing.T, rs []protocol.Reading) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := e.conn.PrepareBatch(ctx, "INSERT INTO telemetry.readings (region, device_type, device, boot, seq, metric, value, ts, ts_ms, received_ms)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		for _, m := range r.Metrics {
			if err := b.Append(region, "th", r.Device, r.Boot, r.Seq, m.Name, m.Value, time.UnixMilli(r.TS), uint64(r.TS), uint64(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// get returns the status and the body of a GET of url.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// getJSON decodes the body of a GET of url into v, unless v is nil, and
// returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	code, b := get(t, url)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
	return code
}

func TestStoresEveryReadingOnce(t *testing.T) {
	e := newEnv(t)
	const devices, perDevice = 4, 60
	rs := readings(devices, perDevice, 1000)
	e.publish(t, rs, true)
	// Messages that can never be rows: skipped, counted, acknowledged.
	e.publishRaw(t, "telemetry.us-east.th.th-000", []byte(`{"v":1,"device":`))
	e.publishRaw(t, "telemetry.us-east.th.th-001", protocol.AppendEncode(nil, protocol.Reading{Device: "th-999", Boot: 1, Seq: 1, TS: 1, Metrics: []protocol.Metric{{Name: "x", Value: 1}}}))

	w := start(t, e.config())
	want := uint64(len(rs) * len(metricNames))
	e.waitStored(t, w, want)
	if n := e.count(t, false); n != want {
		t.Errorf("%d rows without FINAL, want %d: each reading was delivered once", n, want)
	}

	base := "http://" + w.Addr()
	var st storage.Status
	if code := getJSON(t, base+"/api/status", &st); code != http.StatusOK {
		t.Errorf("/api/status answered %d", code)
	}
	if st.State != storage.StateOK || st.RowsStored != want || st.ReadingsStored != uint64(len(rs)) || st.DecodeErrors != 2 || st.LastInsert == "" || st.Error != "" {
		t.Errorf("/api/status = %+v", st)
	}
	if _, err := time.Parse(time.RFC3339, st.LastInsert); err != nil {
		t.Errorf("last_insert %q: %v", st.LastInsert, err)
	}

	var ledger struct{ Ledger []storage.LedgerRow }
	if code := getJSON(t, base+"/api/ledger", &ledger); code != http.StatusOK {
		t.Fatalf("/api/ledger answered %d", code)
	}
	if len(ledger.Ledger) != devices {
		t.Fatalf("ledger has %d rows, want %d: %+v", len(ledger.Ledger), devices, ledger.Ledger)
	}
	for i, r := range ledger.Ledger {
		want := storage.LedgerRow{Region: region, Device: fmt.Sprintf("th-%03d", i), Boot: 1000, Readings: perDevice, MinSeq: 1, MaxSeq: perDevice}
		if r != want {
			t.Errorf("ledger row %d = %+v, want %+v", i, r, want)
		}
	}
	if code := getJSON(t, base+"/api/ledger?device_prefix=th-002", &ledger); code != http.StatusOK || len(ledger.Ledger) != 1 {
		t.Errorf("/api/ledger?device_prefix=th-002: %d, %+v", code, ledger.Ledger)
	}
	if code := getJSON(t, base+"/api/ledger?device_prefix=%27", nil); code != http.StatusServiceUnavailable {
		t.Errorf("/api/ledger with a bad prefix answered %d", code)
	}
	if code := getJSON(t, base+"/healthz", nil); code != http.StatusOK {
		t.Errorf("/healthz answered %d", code)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		fmt.Sprintf("telemetry_storage_rows_inserted_total %d", want),
		fmt.Sprintf("telemetry_storage_readings_inserted_total %d", len(rs)),
		"telemetry_storage_decode_errors_total 2",
		"telemetry_storage_insert_errors_total 0",
		"telemetry_storage_batch_readings_count",
		"telemetry_storage_batch_rows_count",
		"telemetry_storage_insert_seconds_count",
		"telemetry_storage_consumer_pending 0",
		"telemetry_storage_last_insert_timestamp_seconds",
		"telemetry_storage_readings_looked_up_total 0",
		`telemetry_storage_duplicates_dropped_total{found="batch"} 0`,
		`telemetry_storage_duplicates_dropped_total{found="stored"} 0`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestRedeliveryDoesNotDouble(t *testing.T) {
	e := newEnv(t)
	rs := readings(3, 40, 2000)
	want := uint64(len(rs) * len(metricNames))
	e.publish(t, rs, true)

	w := start(t, e.config())
	e.waitStored(t, w, want)
	w.stop(t)

	// The same readings again, without message ids, so that JetStream keeps
	// the copies: as if ingest had published them again after its
	// duplicate window. JetStream delivers them for the first time, so
	// only CheckAll looks them up.
	cfg := e.config()
	cfg.CheckAll = true
	e.publish(t, rs, false)
	w = start(t, cfg)
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.DuplicatesDropped != uint64(len(rs)) || st.ReadingsStored != 0 {
			return fmt.Errorf("status %+v, want all %d copies dropped, none inserted", st, len(rs))
		}
		return nil
	})
	e.waitStored(t, w, want)
	w.stop(t)

	// A new writer from scratch (its consumer deleted) gets everything
	// delivered again, three copies of each reading in all.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, storage.DefaultStream, storage.DefaultDurable); err != nil {
		t.Fatal(err)
	}
	w = start(t, cfg)
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.DuplicatesDropped != 2*uint64(len(rs)) {
			return fmt.Errorf("status %+v: want all %d messages in the stream dropped as stored", st, 2*len(rs))
		}
		return nil
	})
	e.waitStored(t, w, want)
	// No copy reached an insert: the table holds each row once even before
	// merges, and the rollups count each reading once.
	if n := e.count(t, false); n != want {
		t.Errorf("%d rows without FINAL, want %d", n, want)
	}
	e.checkRollups(t, len(rs))
	rows, err := storage.Ledger(ctx, e.conn, storage.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Readings != 40 || r.Missing != 0 {
			t.Errorf("ledger %+v, want 40 readings, none missing", r)
		}
	}
}

// TestRedeliveredBatchDoesNotDoubleRollups plays a writer that inserted
// a batch and died before acknowledging it: JetStream delivers the batch
// again (NumDelivered 2), the new writer looks the readings up, drops
// those stored and inserts only the rest, so neither the table nor the
// rollups count a reading twice. Copies within one batch are dropped too.
func TestRedeliveredBatchDoesNotDoubleRollups(t *testing.T) {
	e := newEnv(t)
	rs := readings(2, 50, 6000)
	cfg := e.config()
	cfg.BatchSize = 500 // the whole stream in one batch
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := storage.Migrate(ctx, e.conn, "telemetry"); err != nil {
		t.Fatal(err)
	}
	e.publish(t, rs, true)
	// Copies of ten readings in the same batch, as JetStream holds them
	// when ingest published them again after the duplicate window.
	e.publish(t, rs[:10], false)

	// The dead writer: it took every message from the durable consumer...
	cons, err := e.js.CreateOrUpdateConsumer(ctx, storage.DefaultStream, jetstream.ConsumerConfig{
		Durable: storage.DefaultDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait, MaxAckPending: 2 * cfg.BatchSize,
		DeliverPolicy: jetstream.DeliverAllPolicy, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.Fetch(len(rs)+10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var taken []jetstream.Msg
	for m := range mb.Messages() {
		taken = append(taken, m)
	}
	if len(taken) != len(rs)+10 {
		t.Fatalf("took %d messages, want %d", len(taken), len(rs)+10)
	}
	// ...stored the first 60 readings, and died before acknowledging.
	e.insertRows(t, rs[:60])
	for _, m := range taken {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}

	w := start(t, cfg)
	want := uint64(len(rs) * len(metricNames))
	e.waitStored(t, w, want)
	st := w.Status()
	if st.ReadingsStored != uint64(len(rs)-60) || st.DuplicatesDropped != 60+10 {
		t.Errorf("status %+v: want %d readings inserted and 70 copies dropped", st, len(rs)-60)
	}
	if n := e.count(t, false); n != want {
		t.Errorf("%d rows without FINAL, want %d: a copy reached an insert", n, want)
	}
	e.checkRollups(t, len(rs))
	metrics := getText(t, "http://"+w.Addr()+"/metrics")
	for _, line := range []string{
		`telemetry_storage_duplicates_dropped_total{found="batch"} 10`,
		`telemetry_storage_duplicates_dropped_total{found="stored"} 60`,
		fmt.Sprintf("telemetry_storage_readings_looked_up_total %d", len(rs)),
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	_, b := get(t, url)
	return string(b)
}

func TestMigrateIsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := storage.Migrate(ctx, e.conn, "telemetry")
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if len(first) == 0 || first[0] != 1 {
		t.Fatalf("first Migrate applied %v, want from version 1", first)
	}
	again, err := storage.Migrate(ctx, e.conn, "telemetry")
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(again) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", again)
	}
	var recorded, versions uint64
	if err := e.conn.QueryRow(ctx, "SELECT count(), uniqExact(version) FROM telemetry.schema_migrations").Scan(&recorded, &versions); err != nil {
		t.Fatal(err)
	}
	if recorded != uint64(len(first)) || versions != uint64(len(first)) {
		t.Fatalf("schema_migrations has %d records of %d versions, want %d once each", recorded, versions, len(first))
	}

	// A migration applied but not recorded (the writer died in between)
	// runs again without failing.
	if err := e.conn.Exec(ctx, "TRUNCATE TABLE telemetry.schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Migrate(ctx, e.conn, "telemetry"); err != nil {
		t.Fatalf("Migrate over unrecorded migrations: %v", err)
	}

	if n := e.count(t, true); n != 0 {
		t.Fatalf("readings has %d rows", n)
	}
}

// TestClickHouseOutage kills ClickHouse under a running writer: inserts
// fail and are retried, nothing is acknowledged, and once ClickHouse is
// back every reading is stored once.
func TestClickHouseOutage(t *testing.T) {
	e := newEnv(t)
	w := start(t, e.config())
	before := readings(2, 30, 3000)
	e.publish(t, before, true)
	e.waitStored(t, w, uint64(len(before)*len(metricNames)))

	e.ch.Kill()
	during := readings(2, 30, 3001)
	e.publish(t, during, true)
	testharness.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateRetrying || st.Error == "" {
			return fmt.Errorf("status %+v, want retrying with the error", st)
		}
		return nil
	})
	var st storage.Status
	if code := getJSON(t, "http://"+w.Addr()+"/api/status", &st); code != http.StatusServiceUnavailable || st.State != storage.StateRetrying {
		t.Errorf("/api/status while retrying: %d %+v", code, st)
	}
	// Nothing of the failing batch may be acknowledged meanwhile.
	testharness.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if p := w.Status().ConsumerPending; p != uint64(len(during)) {
			return fmt.Errorf("consumer pending %d, want %d", p, len(during))
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.ch.Restart(ctx); err != nil {
		t.Fatalf("restarting ClickHouse: %v", err)
	}
	after := readings(2, 30, 3002)
	e.publish(t, after, true)
	e.waitStored(t, w, uint64((len(before)+len(during)+len(after))*len(metricNames)))
	if st := w.Status(); st.Error != "" {
		t.Errorf("error %q left after recovery", st.Error)
	}
}

// TestWaitsForClickHouse starts a writer while ClickHouse is down: it says
// so, and stores everything once ClickHouse comes up.
func TestWaitsForClickHouse(t *testing.T) {
	e := newEnv(t)
	e.ch.Kill()
	rs := readings(1, 20, 4000)
	e.publish(t, rs, true)

	w := start(t, e.config())
	testharness.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateConnecting || !strings.Contains(st.Error, e.ch.Addr()) {
			return fmt.Errorf("status %+v, want connecting, naming ClickHouse's address", st)
		}
		return nil
	})
	if code := getJSON(t, "http://"+w.Addr()+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz answered %d while ClickHouse is down", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.ch.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitStored(t, w, uint64(len(rs)*len(metricNames)))
}

// TestStopHandsBackBatch cancels a writer stuck retrying an insert: Run
// returns after DrainTimeout, handing the batch back to JetStream, and the
// next writer stores it.
func TestStopHandsBackBatch(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.DrainTimeout = 300 * time.Millisecond
	// Longer than waitStored waits: the batch must come back because it was
	// handed back, not because its ack wait ran out.
	cfg.AckWait = 2 * time.Minute
	w := start(t, cfg)
	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateOK {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	e.ch.Kill()
	rs := readings(1, 20, 5000)
	e.publish(t, rs, true)
	testharness.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateRetrying {
			return fmt.Errorf("status %+v, want retrying", st)
		}
		return nil
	})
	stopping := time.Now()
	w.stop(t)
	if d := time.Since(stopping); d > 5*time.Second {
		t.Errorf("stopping took %s with a drain timeout of %s", d, cfg.DrainTimeout)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.ch.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	w = start(t, cfg)
	e.waitStored(t, w, uint64(len(rs)*len(metricNames)))
	var info *jetstream.ConsumerInfo
	c, err := e.js.Consumer(ctx, storage.DefaultStream, storage.DefaultDurable)
	if err == nil {
		info, err = c.Info(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer %+v still has work", info)
	}
}

// storedTimes returns stored_ms and stored_at (unix seconds) of every row
// of boot.
func (e *env) storedTimes(t *testing.T, boot uint64) (ms, at []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.conn.Query(ctx, "SELECT stored_ms, toUInt64(toUInt32(stored_at)) FROM telemetry.readings WHERE boot = ?", boot)
	if err != nil {
		t.Fatalf("reading stored_ms: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m, a uint64
		if err := rows.Scan(&m, &a); err != nil {
			t.Fatal(err)
		}
		ms, at = append(ms, m), append(at, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ms, at
}

// TestStoredMS checks that the writer stamps every row with stored_ms, its
// clock in milliseconds as the rows leave: within the time around each
// round's insert, never 0, and no later than the server's stored_at (taken
// as the server received them, same machine, same clock). Rows inserted
// without the column, as a writer from before migration 3 does, hold 0.
func TestStoredMS(t *testing.T) {
	e := newEnv(t)
	w := start(t, e.config())
	var want uint64
	for round := range uint64(3) {
		boot := 7000 + round
		rs := readings(2, 20, boot)
		before := uint64(time.Now().UnixMilli())
		e.publish(t, rs, true)
		want += uint64(len(rs) * len(metricNames))
		e.waitStored(t, w, want)
		after := uint64(time.Now().UnixMilli())

		ms, at := e.storedTimes(t, boot)
		if len(ms) != len(rs)*len(metricNames) {
			t.Fatalf("round %d: %d rows, want %d", round, len(ms), len(rs)*len(metricNames))
		}
		for i := range ms {
			if ms[i] == 0 || ms[i] < before || ms[i] > after {
				t.Fatalf("round %d: stored_ms %d, want within [%d, %d]", round, ms[i], before, after)
			}
			if at[i] < ms[i]/1000 {
				t.Errorf("round %d: stored_at %d s before stored_ms %d ms", round, at[i], ms[i])
			}
		}
	}

	old := readings(1, 5, 7100)
	e.insertRows(t, old)
	e.requireUnstamped(t, 7100, len(old)*len(metricNames), "rows inserted without stored_ms")
}

// requireUnstamped checks that boot's rows are want in number and all
// have stored_ms 0, the column's default.
func (e *env) requireUnstamped(t *testing.T, boot uint64, want int, what string) {
	t.Helper()
	ms, _ := e.storedTimes(t, boot)
	if len(ms) != want {
		t.Fatalf("%d %s, want %d", len(ms), what, want)
	}
	for _, m := range ms {
		if m != 0 {
			t.Fatalf("stored_ms %d in %s, want the default 0", m, what)
		}
	}
}

// TestMigrateAddsStoredMS upgrades a database from before migration 3,
// holding rows: the column is added, the old rows read 0, and the
// rollups keep counting.
func TestMigrateAddsStoredMS(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := storage.Migrate(ctx, e.conn, "telemetry"); err != nil {
		t.Fatal(err)
	}
	// Back to version 2: only 1 and 2 recorded, no stored_ms.
	for _, q := range []string{
		"ALTER TABLE telemetry.readings DROP COLUMN stored_ms",
		"TRUNCATE TABLE telemetry.schema_migrations",
	} {
		if err := e.conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	b, err := e.conn.PrepareBatch(ctx, "INSERT INTO telemetry.schema_migrations (version, name, applied_at)")
	if err != nil {
		t.Fatal(err)
	}
	for v, name := range map[uint32]string{1: "0001_readings", 2: "0002_rollups_1m"} {
		if err := b.Append(v, name, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	old := readings(1, 5, 8000)
	e.insertRows(t, old)

	applied, err := storage.Migrate(ctx, e.conn, "telemetry")
	if err != nil {
		t.Fatalf("Migrate from version 2: %v", err)
	}
	if len(applied) != 1 || applied[0] != 3 {
		t.Fatalf("Migrate from version 2 applied %v, want [3]", applied)
	}
	// The default's value shows in the old rows below; its text differs
	// between releases (18.16 says CAST(0, 'UInt64')).
	var typ, kind string
	if err := e.conn.QueryRow(ctx, "SELECT type, default_kind FROM system.columns WHERE database = 'telemetry' AND table = 'readings' AND name = 'stored_ms'").Scan(&typ, &kind); err != nil {
		t.Fatalf("stored_ms after migration 3: %v", err)
	}
	if typ != "UInt64" || kind != "DEFAULT" {
		t.Errorf("stored_ms is %s with a %q default, want UInt64 DEFAULT", typ, kind)
	}
	e.requireUnstamped(t, 8000, len(old)*len(metricNames), "old rows after migration 3")
	if again, err := storage.Migrate(ctx, e.conn, "telemetry"); err != nil || len(again) != 0 {
		t.Fatalf("Migrate again: applied %v, %v; want nothing", again, err)
	}

	// The writer inserts into the upgraded table; the rollups' view,
	// which names its columns, counts the old rows and the new.
	w := start(t, e.config())
	rs := readings(1, 10, 8001)
	e.publish(t, rs, true)
	e.waitStored(t, w, uint64((len(old)+len(rs))*len(metricNames)))
	e.checkRollups(t, len(old)+len(rs))
}
