package dashboard

import (
	"context"

	"github.com/telemetry-demo/telemetry/stream"
)

// ReplicationFrom turns region statuses (stream.StatusOf, or a
// stream.LagCollector's) into Config.Replication into the dashboard's lag matrix.
func ReplicationFrom(status func(context.Context) []stream.RegionStatus, regions []string) func(context.Context) ([]ReplicationLag, error) {
	return func(ctx context.Context) ([]ReplicationLag, error) {
		var out []ReplicationLag
		for _, st := range status(ctx) {
			if !st.Reachable {
				for _, from := range regions {
					if from != st.Region {
						out = append(out, ReplicationLag{From: from, To: st.Region, State: stream.LinkDown, HeardAgo: -1, Error: st.Region + " unreachable: " + st.Error})
					}
				}
				continue
			}
			for _, src := range st.Sources {
				heard := -1.0
				if src.Active >= 0 {
					heard = src.Active.Seconds()
				}
				out = append(out, ReplicationLag{
					From: src.From, To: st.Region, Messages: src.LagMessages,
					Seconds: max(src.LagSeconds, 0), HeardAgo: heard, Connected: src.Connected, State: src.State, Error: src.Error,
				})
			}
		}
		return out, nil
	}
}
