// Package httpserv serves the HTTP endpoints every service has: /metrics
// (Prometheus) and /healthz, plus whatever the service adds, with a graceful
// shutdown when the context ends.
package httpserv

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// Mux returns a mux with /metrics for gatherer and /healthz answering 200
// while healthy returns nil, 503 with the error otherwise.
func Mux(gatherer prometheus.Gatherer, healthy func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Profiling adds Go's profiles under /debug/pprof/ to mux. Services add
// them only when asked (a --pprof flag): they show the program's internals
// and a CPU profile costs while it runs.
func Profiling(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Registry returns a registry with the Go runtime and process collectors and
// cs registered.
func Registry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// Bounds of every service's HTTP listener (docs/SECURITY.md): these APIs
// serve operators and the dashboard, a handful of clients.
const (
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout bounds reading a whole request; none has a body.
	ReadTimeout = 10 * time.Second
	// WriteTimeout bounds writing an answer; a CPU profile takes 30 s.
	WriteTimeout   = 60 * time.Second
	IdleTimeout    = 60 * time.Second
	MaxHeaderBytes = 16 << 10
)

// ServiceLimits bound the connections to a service's HTTP API (ingest's
// and storage's /metrics, /healthz and storage's /api): it serves
// operators and the dashboard, a handful of clients.
var ServiceLimits = connlimit.Limits{Total: 1_024, PerAddr: 256}

// Listener is an HTTP listener bound to its limits. Refused counts what it
// refused, as telemetry_http_refused_total; the service registers it with
// its metrics.
type Listener struct {
	net.Listener
	Refused *connlimit.Tally
}

// Listen binds addr now, so that a port already in use is reported before
// anything else starts; a connection beyond limits is closed as it is
// accepted.
func Listen(addr string, limits connlimit.Limits, log *slog.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w (is another instance running? pick another address with the flag)", addr, err)
	}
	refused := connlimit.NewTally("telemetry_http_refused_total",
		"Connections to this service's HTTP API refused, by reason (too_many, too_many_from_address).",
		"HTTP connection refused", log, connlimit.ReasonTooMany, connlimit.ReasonTooManyFromAddress)
	return &Listener{Listener: connlimit.Listen(ln, limits, refused), Refused: refused}, nil
}

// Serve serves h on ln until ctx ends, then shuts down, giving requests in
// progress up to 5 s.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout,
		WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("http listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// HasBearer reports, in constant time, whether r carries
// Authorization: Bearer <token>. An empty token is never carried.
func HasBearer(r *http.Request, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) == 1
}

// SetBearer sends token as req's bearer token, when there is one.
func SetBearer(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}
