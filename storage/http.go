package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

// Handler serves /healthz, /metrics, /api/status, /api/ledger and
// /api/history. Run serves it on Config.Listen; with NoListen the caller
// mounts it.
//
//   - GET /api/status: the Status as JSON; 200 when the state is ok, 503
//     otherwise (the body says why).
//   - GET /api/ledger[?device_prefix=P]: {"ledger":[LedgerRow...]}, per
//     (device, boot) what ClickHouse holds; 503 with {"error":...} when
//     ClickHouse does not answer, or when it is busy (see below).
//   - GET /api/history?metric=M[&minutes=N][&region=R][&device_type=D]:
//     the History of metric M over the last N minutes (default 30, at
//     most 1440) from the per-minute rollups, per region and device type,
//     optionally only region R or device type D:
//     {"metric":"temperature_c","minutes":30,"from":<RFC 3339>,"to":<RFC 3339>,
//     "series":[{"region":"us-east","device_type":"th","points":[{"minute":<RFC 3339>,
//     "count":120,"min":..,"max":..,"avg":..,"p50":..,"p90":..,"p95":..,"p99":..}]}]}.
//     400 with {"error":...} for a bad parameter, 503 when ClickHouse does
//     not answer, or when it is busy.
//   - GET /healthz: 200 when the state is ok.
//
// Ledger and history answers may be up to readCacheAge old: identical
// requests share one query. When every query slot stays taken for
// readSlotWait, the answer is 503 {"error":"ledger busy, try again"} (or
// history) with Retry-After: 1, counted in telemetry_storage_api_busy_total
// (readpool.go).
func (w *Writer) Handler() http.Handler {
	runtime := prometheus.NewRegistry()
	runtime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := httpserv.Mux(prometheus.Gatherers{w.reg, runtime}, w.healthy)
	mux.Handle("GET /api/status", w.readers(http.HandlerFunc(w.serveStatus)))
	mux.Handle("GET /api/ledger", w.readers(http.HandlerFunc(w.serveLedger)))
	mux.Handle("GET /api/history", w.readers(http.HandlerFunc(w.serveHistory)))
	return mux
}

// readers lets a request through to next when it comes from this machine
// (a loopback address) or carries Config.APIToken as a bearer token; any
// other gets 401 (403 when no token is configured) with what to do. The
// ledger and history are the fleet's data: a storage service listening
// beyond loopback (compose) must not hand them to anyone who can reach the
// port.
func (w *Writer) readers(next http.Handler) http.Handler {
	token := w.cfg.APIToken
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if ip, err := netip.ParseAddr(connlimit.HostOf(r.RemoteAddr)); err == nil && ip.Unmap().IsLoopback() {
			next.ServeHTTP(rw, r)
			return
		}
		if token == "" {
			writeJSON(rw, http.StatusForbidden, map[string]string{"error": "storage's API answers only on this machine: give storage --api-token and send it as Authorization: Bearer <token>"})
			return
		}
		if !httpserv.HasBearer(r, token) {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="storage"`)
			writeJSON(rw, http.StatusUnauthorized, map[string]string{"error": "storage's API wants Authorization: Bearer <its --api-token>"})
			return
		}
		next.ServeHTTP(rw, r)
	})
}

func (w *Writer) healthy() error {
	st := w.Status()
	if st.State == StateOK {
		return nil
	}
	if st.Error != "" {
		return errors.New(st.State + ": " + st.Error)
	}
	return errors.New(st.State)
}

func (w *Writer) serveStatus(rw http.ResponseWriter, _ *http.Request) {
	st := w.Status()
	code := http.StatusOK
	if st.State != StateOK {
		code = http.StatusServiceUnavailable
	}
	writeJSON(rw, code, st)
}

func (w *Writer) serveLedger(rw http.ResponseWriter, r *http.Request) {
	a, err := w.ledger(r.Context(), r.URL.Query().Get("device_prefix"))
	if err != nil {
		writeReadError(rw, err)
		return
	}
	writeBody(rw, http.StatusOK, a.json())
}

func (w *Writer) serveHistory(rw http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q := HistoryQuery{Metric: v.Get("metric"), Region: v.Get("region"), DeviceType: v.Get("device_type")}
	if s := v.Get("minutes"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeJSON(rw, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("minutes %q: want a whole number from 1 to %d", s, MaxHistoryMinutes)})
			return
		}
		q.Minutes = n
	}
	a, err := w.history(r.Context(), q)
	if errors.Is(err, ErrBadHistoryQuery) {
		writeJSON(rw, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err != nil {
		writeReadError(rw, err)
		return
	}
	writeBody(rw, http.StatusOK, a.json())
}

// writeReadError answers a failed ledger or history query 503: busy, to
// be tried again after Retry-After, or ClickHouse not answering.
func writeReadError(rw http.ResponseWriter, err error) {
	if errors.Is(err, ErrBusy) {
		rw.Header().Set("Retry-After", busyRetryAfter)
	}
	writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer"}`)
	}
	writeBody(rw, code, append(b, '\n'))
}

// writeBody answers code with body, JSON.
func writeBody(rw http.ResponseWriter, code int, body []byte) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	_, _ = rw.Write(body)
}
