package dashboard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/storage"
)

// historyJSON is what the storage service answers, in the agreed shape.
const historyJSON = `{"metric":"temperature_c","minutes":30,"series":[{"region":"us-east","device_type":"thermostat",` +
	`"points":[{"minute":"2026-11-25T21:40:00Z","count":120,"avg":21.5,"min":19,"max":23.5,"p95":23}]}]}`

func TestHistoryProxy(t *testing.T) {
	var asked string
	serveStorage := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/history" {
				http.NotFound(w, r)
				return
			}
			asked = r.URL.RawQuery
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	cases := []struct {
		name       string
		storageURL func() string
		query      string
		code       int
		state      string // of the error body; "" for history
		errHas     string
		asked      string // the query storage got; "" for not asked
	}{
		{
			name: "forwarded", storageURL: func() string { return serveStorage(200, historyJSON) },
			query: "metric=temperature_c&minutes=30", code: 200, asked: "metric=temperature_c&minutes=30",
		},
		{
			name: "minutes default to 30", storageURL: func() string { return serveStorage(200, historyJSON) },
			query: "metric=temperature_c", code: 200, asked: "metric=temperature_c&minutes=30",
		},
		{
			name: "storage off", storageURL: func() string { return "" },
			query: "metric=temperature_c", code: 503, state: StorageOff, errHas: "history unavailable: storage off (no ClickHouse found)",
		},
		{
			name: "storage not answering", storageURL: func() string { return "http://" + closedAddr(t) },
			query: "metric=temperature_c", code: 502, state: StorageOffline, errHas: "history unavailable: storage offline: storage does not answer",
		},
		{
			name: "storage failing", storageURL: func() string { return serveStorage(503, `{"error":"clickhouse: connection refused"}`) },
			query: "metric=temperature_c", code: 502, state: StorageOffline, errHas: "clickhouse: connection refused", asked: "metric=temperature_c&minutes=30",
		},
		{
			name: "storage answering nonsense", storageURL: func() string { return serveStorage(200, `<html>`) },
			query: "metric=temperature_c", code: 502, state: StorageOffline, errHas: "without history", asked: "metric=temperature_c&minutes=30",
		},
		{
			name: "bad metric", storageURL: func() string { return serveStorage(200, historyJSON) },
			query: "metric=Temp%20C", code: 400, state: "bad_request", errHas: "metric",
		},
		{
			name: "bad minutes", storageURL: func() string { return serveStorage(200, historyJSON) },
			query: "metric=x&minutes=0", code: 400, state: "bad_request", errHas: "minutes",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			asked = ""
			d, err := New(Config{Listen: "127.0.0.1:0", StorageURL: tc.storageURL(), StorageOffReason: "no ClickHouse found"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			rec := httptest.NewRecorder()
			d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/api/history?"+tc.query, nil))
			if rec.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
			if asked != tc.asked {
				t.Errorf("storage asked %q, want %q", asked, tc.asked)
			}
			if tc.state == "" {
				var h storage.History
				if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
					t.Fatal(err)
				}
				want := storage.Point{Minute: time.Date(2026, 11, 25, 21, 40, 0, 0, time.UTC), Count: 120, Avg: 21.5, Min: 19, Max: 23.5, P95: 23}
				if h.Metric != "temperature_c" || len(h.Series) != 1 || h.Series[0].DeviceType != "thermostat" ||
					len(h.Series[0].Points) != 1 || h.Series[0].Points[0] != want {
					t.Errorf("history %+v, want the storage's", h)
				}
				return
			}
			var e historyError
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			if e.State != tc.state || !strings.Contains(e.Error, tc.errHas) {
				t.Errorf("error %+v, want state %q and %q", e, tc.state, tc.errHas)
			}
		})
	}
}

// TestStorageTokenIsSent: with StorageToken set (compose, where storage
// is another machine to it), the status poll and the history proxy send
// it as a bearer token; storage's API answers other machines only with it.
func TestStorageTokenIsSent(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // path: Authorization
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		if r.URL.Path == "/api/history" {
			io.WriteString(w, historyJSON)
			return
		}
		io.WriteString(w, `{"state":"ok"}`)
	}))
	t.Cleanup(srv.Close)
	_, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t), StorageURL: srv.URL, StorageToken: "a-reader-token", StoragePoll: 50 * time.Millisecond})
	resp, err := http.Get(base + "/api/history?metric=temperature_c")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range []string{"/api/status", "/api/history"} {
			if got := seen[p]; got != "Bearer a-reader-token" {
				return fmt.Errorf("%s asked with Authorization %q, want the bearer token", p, got)
			}
		}
		return nil
	})
}

// TestHistoryBusyIsNotOffline: storage answering 503 with Retry-After (its
// history queries all taken) is passed on as busy, not as storage offline.
func TestHistoryBusyIsNotOffline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"history busy, try again"}`)
	}))
	t.Cleanup(srv.Close)
	_, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t), StorageURL: srv.URL})
	resp, err := http.Get(base + "/api/history?metric=temperature_c")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e historyError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || e.State != "busy" {
		t.Errorf("busy storage: %s, Retry-After %q, state %q (%s); want 503, 1, busy", resp.Status, resp.Header.Get("Retry-After"), e.State, e.Error)
	}
}
