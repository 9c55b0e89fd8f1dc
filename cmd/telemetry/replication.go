package main

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/stream"
)

// replicationFrom reports the lag between every pair of regions, asked
// through a connection to natsURL, for the dashboard.
func replicationFrom(natsURL string, regions []string) func(context.Context) ([]dashboard.ReplicationLag, error) {
	var mu sync.Mutex
	var nc *nats.Conn
	return func(ctx context.Context) ([]dashboard.ReplicationLag, error) {
		mu.Lock()
		defer mu.Unlock()
		if nc == nil || nc.IsClosed() {
			c, err := nats.Connect(natsURL, nats.Name("telemetry-replication-status"), nats.MaxReconnects(-1))
			if err != nil {
				return nil, err
			}
			nc = c
		}
		var out []dashboard.ReplicationLag
		for _, st := range stream.Status(ctx, nc, regions) {
			if !st.Reachable {
				for _, from := range regions {
					if from != st.Region {
						out = append(out, dashboard.ReplicationLag{From: from, To: st.Region, Error: st.Error})
					}
				}
				continue
			}
			for _, src := range st.Sources {
				lag := dashboard.ReplicationLag{From: src.From, To: st.Region, Messages: src.Lag, Connected: src.Error == "" && src.Active >= 0 && src.Active < 10*time.Second, Error: src.Error}
				if src.Active >= 0 {
					lag.Seconds = src.Active.Seconds()
				}
				out = append(out, lag)
			}
		}
		return out, nil
	}
}

// redactURL hides the password of a URL for the console.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
