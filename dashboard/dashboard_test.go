package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := poll.Until(timeout, 20*time.Millisecond, cond); err != nil {
		t.Fatal(err)
	}
}

// startRegion starts an embedded JetStream server for domain us-east with
// READINGS and DEADLETTER as the stream package lays them out (here without
// other regions to source from, so READINGS takes every region's subjects).
func startRegion(t *testing.T) (url string, js jetstream.JetStream, stop func()) {
	t.Helper()
	srv, url := testharness.NATS(t, "us-east")
	nc := testharness.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: readingsStream, Subjects: []string{"telemetry.>"}, Storage: jetstream.MemoryStorage},
		{Name: deadLetterStream, Subjects: []string{"deadletter.>"}, Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("creating %s: %v", cfg.Name, err)
		}
	}
	return url, js, srv.Shutdown
}

// startDashboard runs a dashboard on a free port until the test ends.
func startDashboard(t *testing.T, cfg Config) (*Dashboard, string) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	d, err := New(cfg, slogForTest(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d, "http://" + d.Addr()
}

func getSnapshot(t *testing.T, base string) (Snapshot, error) {
	t.Helper()
	resp, err := http.Get(base + "/api/snapshot")
	if err != nil {
		return Snapshot{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Snapshot{}, fmt.Errorf("GET /api/snapshot: %s", resp.Status)
	}
	var s Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Snapshot{}, fmt.Errorf("decoding snapshot: %w", err)
	}
	return s, nil
}

// waitConsuming waits until the READINGS consumer runs: it delivers only
// readings published after that.
func waitConsuming(t *testing.T, base string) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if !s.NATS.Connected || s.NATS.Readings != "ok" {
			return fmt.Errorf("nats connected=%v readings=%q", s.NATS.Connected, s.NATS.Readings)
		}
		return nil
	})
}

func publishReading(t *testing.T, js jetstream.JetStream, region, device string, seq uint64, value float64, lag time.Duration) {
	t.Helper()
	r := protocol.Reading{
		Version: protocol.Version1, Device: device, Boot: 1, Seq: seq,
		TS:      time.Now().Add(-lag).UnixMilli(),
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: value}},
	}
	publish(t, js, &nats.Msg{
		Subject: "telemetry." + region + ".th." + device,
		Data:    protocol.AppendEncode(nil, r),
		Header:  nats.Header{"Nats-Msg-Id": []string{r.ID()}},
	})
}

func publish(t *testing.T, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publishing to %s: %v", msg.Subject, err)
	}
}

func deadLetter(subject, reason string) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: []byte(`{"v":1,`), Header: nats.Header{}}
	if reason != "" {
		m.Header.Set(protocol.HeaderReason, reason)
	}
	m.Header.Set("Telemetry-Topic", "telemetry/us-east/th/th-1")
	return m
}

func TestSnapshotCountsPerRegion(t *testing.T) {
	url, js, _ := startRegion(t)
	// Dead letters are counted from the start of the stream: this one
	// predates the dashboard.
	publish(t, js, deadLetter("deadletter.us-east.bad_json", "bad_json"))

	_, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", PushInterval: 50 * time.Millisecond})
	waitConsuming(t, base)

	for i := range 5 {
		publishReading(t, js, "us-east", "th-1", uint64(i+1), 20+float64(i), 200*time.Millisecond)
	}
	for i := range 3 {
		publishReading(t, js, "eu-west", fmt.Sprintf("eu-%d", i), 1, 30, 0)
	}
	publishReading(t, js, "mars", "mars-1", 1, 1, 0)
	publish(t, js, &nats.Msg{Subject: "telemetry.us-east.th.th-9", Data: []byte("not json")})
	publish(t, js, deadLetter("deadletter.us-east.bad_json", "bad_json"))
	publish(t, js, deadLetter("deadletter.us-east.stale", "")) // reason from the subject

	want := map[string]struct {
		total  uint64
		active int
	}{"us-east": {5, 1}, "eu-west": {3, 3}, "ap-south": {0, 0}}
	var s Snapshot
	waitFor(t, 10*time.Second, func() error {
		var err error
		if s, err = getSnapshot(t, base); err != nil {
			return err
		}
		for _, r := range s.Regions {
			if w := want[r.Region]; r.Total != w.total || r.ActiveDevices != w.active {
				return fmt.Errorf("%s: total %d active %d, want %d %d", r.Region, r.Total, r.ActiveDevices, w.total, w.active)
			}
		}
		if s.OtherReadings != 1 || s.Undecodable != 1 {
			return fmt.Errorf("other %d undecodable %d, want 1 and 1", s.OtherReadings, s.Undecodable)
		}
		us := s.Regions[0]
		if us.Rejected["bad_json"] != 2 || us.Rejected["stale"] != 1 || us.RejectedTotal != 3 {
			return fmt.Errorf("us-east rejected %v total %d, want bad_json 2, stale 1", us.Rejected, us.RejectedTotal)
		}
		return nil
	})

	if got := []string{s.Regions[0].Region, s.Regions[1].Region, s.Regions[2].Region}; fmt.Sprint(got) != "[us-east eu-west ap-south]" {
		t.Errorf("regions in order %v, want the config's", got)
	}
	us := s.Regions[0]
	if us.Latency.Samples != 5 || us.Latency.P50 < 200 || us.Latency.P99 > 60_000 {
		t.Errorf("us-east latency %+v: want 5 samples of at least the 200 ms the readings were backdated", us.Latency)
	}
	if len(us.Metrics) != 1 || us.Metrics[0] != (MetricStats{DeviceType: "th", Name: "temperature_c", Count: 5, Avg: 22, Min: 20, Max: 24, P95: 24}) {
		t.Errorf("us-east metrics %+v, want temperature_c 5 values 20..24", us.Metrics)
	}
	if us.DeadLetters != "ok" {
		t.Errorf("us-east dead letters %q, want ok", us.DeadLetters)
	}
	// No server serves the other domains: the page must say so, not hang.
	waitFor(t, 10*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if st := s.Regions[1].DeadLetters; !strings.HasPrefix(st, "unreachable") {
			return fmt.Errorf("eu-west dead letters %q, want unreachable", st)
		}
		return nil
	})

	// The same numbers reach Prometheus.
	body := get(t, base+"/metrics")
	for _, line := range []string{
		`telemetry_dashboard_readings_total{region="us-east"} 5`,
		`telemetry_dashboard_deadletters_total{reason="bad_json",region="us-east"} 2`,
		`telemetry_dashboard_undecodable_total 1`,
		`telemetry_dashboard_nats_connected 1`,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func dialWS(t *testing.T, base string) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dialing /ws: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readUntil reads snapshots from conn until ok accepts one, checking that
// their Seq only goes up.
func readUntil(t *testing.T, conn *websocket.Conn, timeout time.Duration, lastSeq *uint64, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if err := conn.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		var s Snapshot
		if err := conn.ReadJSON(&s); err != nil {
			t.Fatalf("reading a snapshot: %v", err)
		}
		if s.Seq <= *lastSeq {
			t.Fatalf("snapshot seq %d after %d", s.Seq, *lastSeq)
		}
		*lastSeq = s.Seq
		if ok(s) {
			return s
		}
	}
}

func TestWebsocketPushesChangingSnapshots(t *testing.T) {
	url, js, _ := startRegion(t)
	_, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"}, PushInterval: 50 * time.Millisecond})
	waitConsuming(t, base)
	conn := dialWS(t, base)

	var seq uint64
	total := func(n uint64) func(Snapshot) bool {
		return func(s Snapshot) bool { return s.Regions[0].Total == n }
	}
	readUntil(t, conn, 5*time.Second, &seq, total(0))
	for i := range 3 {
		publishReading(t, js, "us-east", "th-1", uint64(i+1), 1, 0)
	}
	readUntil(t, conn, 10*time.Second, &seq, total(3))
	for i := range 2 {
		publishReading(t, js, "us-east", "th-1", uint64(i+4), 1, 0)
	}
	s := readUntil(t, conn, 10*time.Second, &seq, total(5))
	if s.Clients != 1 {
		t.Errorf("snapshot says %d clients, want 1", s.Clients)
	}
}

func TestStalledClientIsDropped(t *testing.T) {
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{
		NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		// A queue of 64 pushes gives the healthy reader 640 ms of slack on
		// a loaded machine; the stalled one goes by queue_full or, after
		// PongWait, pong_timeout.
		PushInterval: 10 * time.Millisecond, ClientQueue: 64, PongWait: time.Second, WriteTimeout: 500 * time.Millisecond,
	})

	healthy := dialWS(t, base)
	var received atomic.Int64
	go func() {
		for {
			if _, _, err := healthy.ReadMessage(); err != nil { // also answers pings
				return
			}
			received.Add(1)
		}
	}()
	stalled := dialWS(t, base) // never read: never answers a ping
	waitFor(t, 5*time.Second, func() error {
		if n := d.hub.count(); n != 2 {
			return fmt.Errorf("%d clients, want 2", n)
		}
		return nil
	})

	waitFor(t, 15*time.Second, func() error {
		if n := d.hub.count(); n != 1 {
			return fmt.Errorf("%d clients, want the stalled one dropped", n)
		}
		return nil
	})
	var dropped float64
	for _, r := range []string{dropQueueFull, dropWriteFailed, dropPongTimeout} {
		dropped += float64(d.hub.dropped.Count(r))
	}
	if dropped != 1 {
		t.Errorf("dropped %v clients, want 1", dropped)
	}

	// The healthy client kept getting snapshots, and still does.
	before := received.Load()
	waitFor(t, 5*time.Second, func() error {
		if n := received.Load() - before; n < 10 {
			return fmt.Errorf("healthy client got %d snapshots since the drop", n)
		}
		return nil
	})

	// The server closed the stalled connection: once its backlog is read,
	// it ends.
	if err := stalled.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := stalled.ReadMessage()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("stalled client's connection still open after it was dropped")
		}
		break
	}
}

func TestHealthz(t *testing.T) {
	url, _, stopNATS := startRegion(t)
	d, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"}})

	waitFor(t, 10*time.Second, func() error {
		code, body, err := health(t, base)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("healthz %d %q %v, want 200", code, body, err)
		}
		return nil
	})

	stopNATS()
	waitFor(t, 10*time.Second, func() error {
		code, body, err := health(t, base)
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
			return fmt.Errorf("healthz %d %q %v, want 503 naming nats", code, body, err)
		}
		return nil
	})
	if s := d.Snapshot(); s.NATS.Connected {
		t.Errorf("snapshot says NATS connected after the server stopped")
	}
}

func TestHealthzBeforeRun(t *testing.T) {
	d, err := New(Config{Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rec := httptest.NewRecorder()
	d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("healthz before Run: %d %q, want 503", rec.Code, rec.Body)
	}
}

func TestStorageState(t *testing.T) {
	// The dashboard keeps retrying NATS in the background; storage is
	// polled regardless, so no NATS server is needed here.
	deadNATS := "nats://" + closedAddr(t)
	statusServer := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/status" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	cases := []struct {
		name       string
		storageURL func() string
		want       StorageState // State, Reason (prefix), RowsStored, ReadingsStored, Error compared
	}{
		{
			name:       "off",
			storageURL: func() string { return "" },
			want:       StorageState{State: StorageOff, Reason: "no ClickHouse found"},
		},
		{
			name:       "offline when nothing answers",
			storageURL: func() string { return "http://" + closedAddr(t) },
			want:       StorageState{State: StorageOffline, Reason: "storage at http://"},
		},
		{
			name:       "offline when the answer is not a status",
			storageURL: func() string { return statusServer(http.StatusBadGateway, "<html>bad gateway</html>") },
			want:       StorageState{State: StorageOffline, Reason: "storage at http://"},
		},
		{
			name: "ok",
			storageURL: func() string {
				return statusServer(http.StatusOK, `{"state":"ok","rows_stored":42,"readings_stored":14,"last_insert":"2025-11-25T21:00:00Z","consumer_pending":3,"region":"us-east","home_region":"us-east","failovers":0}`)
			},
			want: StorageState{State: "ok", RowsStored: 42, ReadingsStored: 14, LastInsert: "2025-11-25T21:00:00Z", ConsumerPending: 3, Region: "us-east", HomeRegion: "us-east"},
		},
		{
			name: "ok, failed over",
			storageURL: func() string {
				return statusServer(http.StatusOK, `{"state":"ok","rows_stored":42,"region":"eu-west","home_region":"us-east","failovers":1}`)
			},
			want: StorageState{State: "ok", RowsStored: 42, Region: "eu-west", HomeRegion: "us-east", Failovers: 1},
		},
		{
			name: "retrying, reported with a 503",
			storageURL: func() string {
				return statusServer(http.StatusServiceUnavailable, `{"state":"retrying","rows_stored":42,"error":"dial tcp: connection refused"}`)
			},
			want: StorageState{State: "retrying", RowsStored: 42, Error: "dial tcp: connection refused"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, base := startDashboard(t, Config{
				NATSURL: deadNATS, Domain: "us-east", Regions: []string{"us-east"},
				StorageURL: tc.storageURL(), StorageOffReason: "no ClickHouse found",
				StoragePoll: 50 * time.Millisecond,
			})
			waitFor(t, 10*time.Second, func() error {
				s, err := getSnapshot(t, base)
				if err != nil {
					return err
				}
				got := s.Storage
				if got.State != tc.want.State || !strings.HasPrefix(got.Reason, tc.want.Reason) ||
					got.RowsStored != tc.want.RowsStored || got.ReadingsStored != tc.want.ReadingsStored ||
					got.LastInsert != tc.want.LastInsert || got.ConsumerPending != tc.want.ConsumerPending ||
					got.Error != tc.want.Error || got.Region != tc.want.Region || got.HomeRegion != tc.want.HomeRegion ||
					got.Failovers != tc.want.Failovers {
					return fmt.Errorf("storage %+v, want %+v", got, tc.want)
				}
				return nil
			})
		})
	}
}

func TestReplicationLagShown(t *testing.T) {
	var calls atomic.Int64
	lags := func(ctx context.Context) ([]ReplicationLag, error) {
		if calls.Add(1) > 1 {
			return nil, errors.New("hub unreachable")
		}
		return []ReplicationLag{{From: "eu-west", To: "us-east", Messages: 7, Seconds: 0.5, Connected: true}}, nil
	}
	_, base := startDashboard(t, Config{
		NATSURL: "nats://" + closedAddr(t), Regions: []string{"us-east", "eu-west"},
		Replication: lags, ReplicationPoll: 20 * time.Millisecond,
	})
	waitFor(t, 10*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		want := []ReplicationLag{{From: "eu-west", To: "us-east", Messages: 7, Seconds: 0.5, Connected: true, Error: "hub unreachable"}}
		if fmt.Sprint(s.Replication) != fmt.Sprint(want) {
			return fmt.Errorf("replication %+v, want the last known lag marked with the error %+v", s.Replication, want)
		}
		return nil
	})
}

// A link changing state reaches the page with the next replication poll,
// not the next push: here pushes are 5 s apart and the cut shows well
// within that.
func TestALinkChangingStateIsPushedAtOnce(t *testing.T) {
	var cut atomic.Bool
	lags := func(ctx context.Context) ([]ReplicationLag, error) {
		if cut.Load() {
			return []ReplicationLag{{From: "eu-west", To: "us-east", Messages: 3, HeardAgo: 0.2, State: "down"}}, nil
		}
		return []ReplicationLag{{From: "eu-west", To: "us-east", Connected: true, State: "up"}}, nil
	}
	const push = 5 * time.Second
	_, base := startDashboard(t, Config{
		NATSURL: "nats://" + closedAddr(t), Regions: []string{"us-east", "eu-west"},
		Replication: lags, ReplicationPoll: 50 * time.Millisecond, PushInterval: push,
	})
	conn := dialWS(t, base)
	var seq uint64
	state := func(want string) func(Snapshot) bool {
		return func(s Snapshot) bool { return len(s.Replication) == 1 && s.Replication[0].State == want }
	}
	readUntil(t, conn, 2*push, &seq, state("up"))
	at := time.Now()
	cut.Store(true)
	readUntil(t, conn, push, &seq, state("down"))
	if d := time.Since(at); d > push/2 {
		t.Errorf("the cut reached the page %v after it showed in the status, want well within the push interval %v", d, push)
	} else {
		t.Logf("the cut reached the page %v after it showed in the status", d.Round(time.Millisecond))
	}
}

// closedAddr is a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestPageAndMetrics(t *testing.T) {
	extra := prometheus.NewRegistry()
	extra.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "telemetry_other_thing_total", Help: "From another component."}))
	_, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t), Gatherer: extra})

	page := get(t, base+"/")
	for _, want := range []string{`id="storage-state"`, `id="regions"`, `src="app.js"`, `href="style.css"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, want := range []string{"rate-", "spark-", "new WebSocket", "disconnected"} {
		if !strings.Contains(get(t, base+"/app.js"), want) {
			t.Errorf("app.js lacks %q", want)
		}
	}
	get(t, base+"/style.css")
	metrics := get(t, base+"/metrics")
	for _, want := range []string{"telemetry_dashboard_ws_clients 0", "telemetry_other_thing_total 0", "telemetry_dashboard_nats_connected 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	d, err := New(Config{Listen: "127.0.0.1:0", NATSURL: "nats://" + closedAddr(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	waitFor(t, 5*time.Second, func() error {
		if d.conn() == nil {
			return errors.New("not running yet")
		}
		return nil
	})
	for range 2 {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := d.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("Run after Close: %v, want ErrRunning", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"defaults", Config{}, ""},
		{"full", Config{NATSURL: "nats://h:4223", Domain: "eu-west", Regions: []string{"eu-west", "us-east"}, Listen: ":0", StorageURL: "http://127.0.0.1:8081"}, ""},
		{"domain not a region", Config{Domain: "mars"}, `domain "mars"`},
		{"bad region", Config{Regions: []string{"us-east", "EU"}}, `region "EU"`},
		{"duplicate region", Config{Regions: []string{"us-east", "us-east"}}, "listed twice"},
		{"bad listen", Config{Listen: "8080"}, "listen address"},
		{"storage URL without scheme", Config{StorageURL: "127.0.0.1:8081"}, "storage URL"},
		{"negative push interval", Config{PushInterval: -time.Second}, "push interval"},
		{"push interval the page takes for silence", Config{PushInterval: time.Minute}, "push interval"},
		{"window under a second", Config{Window: 500 * time.Millisecond}, "window"},
		{"negative queue", Config{ClientQueue: -1}, "client queue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// slogForTest logs to the test's output until it ends (NATS callbacks may
// fire a little later; those lines are dropped).
func slogForTest(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
