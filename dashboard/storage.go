package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

// storageStatus is the JSON of the storage service's GET /api/status.
type storageStatus struct {
	State           string `json:"state"`
	RowsStored      uint64 `json:"rows_stored"`
	ReadingsStored  uint64 `json:"readings_stored"`
	LastInsert      string `json:"last_insert"`
	ConsumerPending uint64 `json:"consumer_pending"`
	Error           string `json:"error"`
	Region          string `json:"region"`
	HomeRegion      string `json:"home_region"`
	Failovers       uint64 `json:"failovers"`
	Discarded       uint64 `json:"discarded"`
}

// pollStorage asks the storage service for its status every StoragePoll
// until ctx is done.
func (d *Dashboard) pollStorage(ctx context.Context) {
	client := &http.Client{Timeout: min(d.cfg.StoragePoll, 2*time.Second)}
	url := strings.TrimRight(d.cfg.StorageURL, "/") + "/api/status"
	t := time.NewTicker(d.cfg.StoragePoll)
	defer t.Stop()
	var lastState string
	for {
		st := fetchStorage(ctx, client, url, d.cfg.StorageToken)
		if ctx.Err() != nil {
			return
		}
		st.CheckedAt = time.Now().UTC()
		d.mu.Lock()
		st.Since = d.storage.Since
		if st.State != d.storage.State || st.Since.IsZero() {
			st.Since = st.CheckedAt
		}
		d.storage = st
		d.mu.Unlock()
		if st.State == StorageOffline {
			d.m.storageUp.Set(0)
		} else {
			d.m.storageUp.Set(1)
		}
		if st.State != lastState {
			d.log.Info("storage state", "state", st.State, "reason", st.Reason, "error", st.Error)
			lastState = st.State
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fetchStorage gets one status. Anything but a JSON status, whatever the
// HTTP code, means the service is offline as far as the page is concerned.
func fetchStorage(ctx context.Context, client *http.Client, url, token string) StorageState {
	offline := func(format string, args ...any) StorageState {
		return StorageState{State: StorageOffline, Reason: fmt.Sprintf(format, args...)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return offline("bad storage URL: %v", err)
	}
	httpserv.SetBearer(req, token)
	resp, err := client.Do(req)
	if err != nil {
		return offline("storage at %s does not answer: %v", url, err)
	}
	defer resp.Body.Close()
	var st storageStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st); err != nil {
		return offline("storage at %s answered %s without a status: %v", url, resp.Status, err)
	}
	if st.State == "" {
		st.State = StorageUnknown
	}
	return StorageState{
		State:           st.State,
		RowsStored:      st.RowsStored,
		ReadingsStored:  st.ReadingsStored,
		LastInsert:      st.LastInsert,
		ConsumerPending: st.ConsumerPending,
		Error:           st.Error,
		Region:          st.Region,
		HomeRegion:      st.HomeRegion,
		Failovers:       st.Failovers,
		Discarded:       st.Discarded,
	}
}

// pollReplication asks Config.Replication for the lag between regions, and
// Config.Alerts for what is wrong with their streams, every StoragePoll
// until ctx is done. On error the last known lags stay, marked with the
// error.
func (d *Dashboard) pollReplication(ctx context.Context) {
	t := time.NewTicker(d.cfg.ReplicationPoll)
	defer t.Stop()
	for {
		var lags []ReplicationLag
		var lagErr, alertErr error
		var alerts map[string]string
		rctx, cancel := context.WithTimeout(ctx, apiTimeout)
		if d.cfg.Replication != nil {
			lags, lagErr = d.cfg.Replication(rctx)
		}
		if d.cfg.Alerts != nil {
			alerts, alertErr = d.cfg.Alerts(rctx)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		if lagErr != nil {
			d.log.Debug("replication lag", "err", lagErr)
			for i := range d.replication {
				d.replication[i].Error = lagErr.Error()
			}
		} else if d.cfg.Replication != nil {
			changed := linkStatesDiffer(d.replication, lags)
			d.replication = append(d.replication[:0], lags...)
			if changed {
				select {
				case d.pushNow <- struct{}{}:
				default: // a push is due already
				}
			}
		}
		if alertErr != nil {
			d.log.Debug("stream alerts", "err", alertErr)
		} else {
			d.alerts = alerts
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// linkStatesDiffer reports whether any link's state differs between a and b
// (a link added or gone counts).
func linkStatesDiffer(a, b []ReplicationLag) bool {
	if len(a) != len(b) {
		return true
	}
	states := make(map[[2]string]string, len(a))
	for _, l := range a {
		states[[2]string{l.From, l.To}] = l.State
	}
	for _, l := range b {
		if s, ok := states[[2]string{l.From, l.To}]; !ok || s != l.State {
			return true
		}
	}
	return false
}
