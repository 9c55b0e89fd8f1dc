package stream

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// StatusOf asks every region, each through its own URL where one is
// given (so that a region cut off from the hub is still seen), for
// `stream status`, the dashboard and the lag metrics. Connections are made
// on first use and kept.
func StatusOf(urls map[string]string, regions []string) func(context.Context) []RegionStatus {
	var mu sync.Mutex
	var rs Regions
	var conns []*nats.Conn
	return func(ctx context.Context) []RegionStatus {
		mu.Lock()
		defer mu.Unlock()
		if rs == nil {
			var err error
			rs, conns, err = Connect(urls, regions, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
			if err != nil {
				out := make([]RegionStatus, 0, len(regions))
				for _, r := range regions {
					out = append(out, RegionStatus{Region: r, Error: err.Error()})
				}
				rs = nil
				return out
			}
			_ = conns // kept open for the life of the process
		}
		return Status(ctx, rs, regions)
	}
}

// StatusOnce connects to the regions through urls (one reachable region is
// enough), reads their Status and listens a heartbeat interval for each
// region's ingest: `telemetry stream status`. A region whose ingest is not
// heard is shown without its ingest's line.
func StatusOnce(ctx context.Context, urls map[string]string, regions []string) ([]RegionStatus, error) {
	rs, conns, err := Connect(urls, regions)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	st := Status(ctx, rs, regions)
	beats, err := HearIngest(ctx, conns[0], HeartbeatInterval+500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	WithIngest(st, beats)
	return st, nil
}
