package main

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/stream"
)

// regionStatus asks every region, each through its own URL where one is
// given (so that a region cut off from the hub is still seen), for
// `stream status`, the dashboard and the lag metrics. Connections are made
// on first use and kept.
func regionStatus(urls map[string]string, regions []string) func(context.Context) []stream.RegionStatus {
	var mu sync.Mutex
	var rs stream.Regions
	var conns []*nats.Conn
	return func(ctx context.Context) []stream.RegionStatus {
		mu.Lock()
		defer mu.Unlock()
		if rs == nil {
			var err error
			rs, conns, err = stream.Connect(urls, regions, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
			if err != nil {
				out := make([]stream.RegionStatus, 0, len(regions))
				for _, r := range regions {
					out = append(out, stream.RegionStatus{Region: r, Error: err.Error()})
				}
				rs = nil
				return out
			}
			_ = conns // kept open for the life of the process
		}
		return stream.Status(ctx, rs, regions)
	}
}

// replicationFor turns region statuses into the dashboard's lag matrix.
func replicationFor(status func(context.Context) []stream.RegionStatus, regions []string) func(context.Context) ([]dashboard.ReplicationLag, error) {
	return func(ctx context.Context) ([]dashboard.ReplicationLag, error) {
		var out []dashboard.ReplicationLag
		for _, st := range status(ctx) {
			if !st.Reachable {
				for _, from := range regions {
					if from != st.Region {
						out = append(out, dashboard.ReplicationLag{From: from, To: st.Region, State: stream.LinkDown, HeardAgo: -1, Error: st.Region + " unreachable: " + st.Error})
					}
				}
				continue
			}
			for _, src := range st.Sources {
				heard := -1.0
				if src.Active >= 0 {
					heard = src.Active.Seconds()
				}
				out = append(out, dashboard.ReplicationLag{
					From: src.From, To: st.Region, Messages: src.LagMessages,
					Seconds: max(src.LagSeconds, 0), HeardAgo: heard, Connected: src.Connected, State: src.State, Error: src.Error,
				})
			}
		}
		return out, nil
	}
}
