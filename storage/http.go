package storage

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

// Handler serves /healthz, /metrics, /api/status and /api/ledger. Run
// serves it on Config.Listen; with NoListen the caller mounts it.
//
//   - GET /api/status: the Status as JSON; 200 when the state is ok, 503
//     otherwise (the body says why).
//   - GET /api/ledger[?device_prefix=P]: {"ledger":[LedgerRow...]}, per
//     (device, boot) what ClickHouse holds; 503 with {"error":...} when
//     ClickHouse does not answer.
//   - GET /healthz: 200 when the state is ok.
func (w *Writer) Handler() http.Handler {
	runtime := prometheus.NewRegistry()
	runtime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := httpserv.Mux(prometheus.Gatherers{w.reg, runtime}, w.healthy)
	mux.HandleFunc("GET /api/status", w.serveStatus)
	mux.HandleFunc("GET /api/ledger", w.serveLedger)
	return mux
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
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rows, err := w.Ledger(ctx, r.URL.Query().Get("device_prefix"))
	if err != nil {
		writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	if rows == nil {
		rows = []LedgerRow{}
	}
	writeJSON(rw, http.StatusOK, map[string]any{"ledger": rows})
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	_ = json.NewEncoder(rw).Encode(v)
}
