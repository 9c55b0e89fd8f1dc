package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// HeartbeatInterval is how often each region's ingest says how it is doing
// on HeartbeatSubject.
const HeartbeatInterval = time.Second

// HeartbeatSubject is the core NATS subject (no stream keeps it) on which
// region's ingest publishes its IngestHeartbeat. The hub carries it to
// every region's server, so one connection hears every region's.
func HeartbeatSubject(region string) string { return "status.ingest." + region }

// HeartbeatSubjects matches every region's HeartbeatSubject.
const HeartbeatSubjects = "status.ingest.*"

// IngestHeartbeat is what a region's ingest says about itself every
// HeartbeatInterval, as JSON.
type IngestHeartbeat struct {
	Region string    `json:"region"`
	Time   time.Time `json:"time"`
	// Accepted counts the readings ingest stored in READINGS since it
	// started, Rejected the payloads it dead-lettered: what this region's
	// devices got in, whatever happens downstream.
	Accepted uint64 `json:"accepted"`
	Rejected uint64 `json:"rejected"`
	// Blocked says why ingest cannot publish, once every publish has
	// failed for a while (e.g. "READINGS full in us-east: maximum bytes
	// exceeded"), since Since; empty while it publishes.
	Blocked string    `json:"blocked,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// HearIngest listens on nc for every region's heartbeat for wait (a
// little over HeartbeatInterval hears each live ingest once) and returns
// the last of each region's.
func HearIngest(ctx context.Context, nc *nats.Conn, wait time.Duration) (map[string]IngestHeartbeat, error) {
	beats := make(chan IngestHeartbeat, 64)
	sub, err := nc.Subscribe(HeartbeatSubjects, func(m *nats.Msg) {
		var hb IngestHeartbeat
		if json.Unmarshal(m.Data, &hb) == nil && hb.Region != "" {
			select {
			case beats <- hb:
			default:
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("hearing ingest's heartbeats on %s: %w", HeartbeatSubjects, err)
	}
	defer sub.Unsubscribe()
	out := map[string]IngestHeartbeat{}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case hb := <-beats:
			out[hb.Region] = hb
		case <-t.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}
