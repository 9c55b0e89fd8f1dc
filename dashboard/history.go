package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/storage"
)

// The page's history charts come from the storage service's per-minute
// rollups in ClickHouse. The dashboard forwards GET /api/history to
// StorageURL/api/history, so the page talks to one origin and learns in one
// place why there is no history (storage off or offline).
const (
	// DefaultHistoryMinutes is the span asked for when the page gives none.
	DefaultHistoryMinutes = 30
	// maxHistoryMinutes bounds what one request may ask ClickHouse for.
	maxHistoryMinutes = 24 * 60
	// maxHistoryBody bounds the storage service's answer.
	maxHistoryBody = 4 << 20
	// historyTimeout bounds one forwarded request.
	historyTimeout = 10 * time.Second
)

// metricName is the wire protocol's rule for metric names.
var metricName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// historyError is the body of every failed GET /api/history: State is the
// storage state the page should show ("off", "offline", or what storage
// said), Error a sentence for the viewer.
type historyError struct {
	State string `json:"state"`
	Error string `json:"error"`
}

// serveHistory forwards GET /api/history?metric=M&minutes=N to the storage
// service, after checking the parameters. It answers 503 when storage is
// off, 502 when it does not answer with history.
func (d *Dashboard) serveHistory(w http.ResponseWriter, r *http.Request) {
	metric := r.URL.Query().Get("metric")
	if !metricName.MatchString(metric) {
		writeJSON(w, http.StatusBadRequest, historyError{State: "bad_request", Error: fmt.Sprintf("metric %q: want a metric name such as temperature_c", metric)})
		return
	}
	minutes := DefaultHistoryMinutes
	if s := r.URL.Query().Get("minutes"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxHistoryMinutes {
			writeJSON(w, http.StatusBadRequest, historyError{State: "bad_request", Error: fmt.Sprintf("minutes %q: want 1 to %d", s, maxHistoryMinutes)})
			return
		}
		minutes = n
	}
	if d.cfg.StorageURL == "" {
		writeJSON(w, http.StatusServiceUnavailable, historyError{State: StorageOff, Error: "history unavailable: storage off (" + d.cfg.StorageOffReason + ")"})
		return
	}
	h, code, err := d.fetchHistory(r.Context(), metric, minutes)
	if errors.Is(err, errStorageBusy) {
		// Storage is up, its query slots were taken (storage's read
		// pool): not offline; the page asks again on its next round.
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, historyError{State: "busy", Error: "history busy, try again: " + err.Error()})
		return
	}
	if err != nil {
		writeJSON(w, code, historyError{State: StorageOffline, Error: "history unavailable: storage offline: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// errStorageBusy: storage answered 503 with Retry-After, its history
// queries all taken (storage.ErrBusy).
var errStorageBusy = errors.New("storage busy")

// fetchHistory asks the storage service. On error it returns the status
// the dashboard should answer with.
func (d *Dashboard) fetchHistory(ctx context.Context, metric string, minutes int) (storage.History, int, error) {
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	u := strings.TrimRight(d.cfg.StorageURL, "/") + "/api/history?" + url.Values{
		"metric": {metric}, "minutes": {strconv.Itoa(minutes)},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return storage.History{}, http.StatusInternalServerError, fmt.Errorf("history request: %w", err)
	}
	httpserv.SetBearer(req, d.cfg.StorageToken)
	resp, err := d.httpc.Do(req)
	if err != nil {
		return storage.History{}, http.StatusBadGateway, fmt.Errorf("storage does not answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHistoryBody+1))
	if err != nil {
		return storage.History{}, http.StatusBadGateway, fmt.Errorf("reading storage's answer: %w", err)
	}
	if len(body) > maxHistoryBody {
		return storage.History{}, http.StatusBadGateway, fmt.Errorf("storage's answer is over %d bytes", maxHistoryBody)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
			return storage.History{}, http.StatusServiceUnavailable, fmt.Errorf("%w: %s", errStorageBusy, msg)
		}
		return storage.History{}, http.StatusBadGateway, fmt.Errorf("storage answered %s: %s", resp.Status, msg)
	}
	var h storage.History
	if err := json.Unmarshal(body, &h); err != nil {
		return storage.History{}, http.StatusBadGateway, fmt.Errorf("storage answered without history: %w", err)
	}
	if h.Series == nil {
		h.Series = []storage.Series{}
	}
	return h, http.StatusOK, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
