package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// BlockedAfter is how long JetStream must have refused or failed every
// publish for ingest to report itself blocked: a lasting refusal, not a
// publish retried once.
const BlockedAfter = 2 * time.Second

// blockage tracks whether publishes to JetStream succeed: since when they
// all fail, and why. The acker writes it; health readers read it.
type blockage struct {
	mu     sync.Mutex
	since  time.Time // zero while publishes succeed
	reason string
}

func (b *blockage) failed(reason string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() {
		b.since = now
	}
	b.reason = reason
}

func (b *blockage) succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.since, b.reason = time.Time{}, ""
}

// state is why publishing is blocked and since when, once it has been for
// BlockedAfter; empty otherwise.
func (b *blockage) state(now time.Time) (reason string, since time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() || now.Sub(b.since) < BlockedAfter {
		return "", time.Time{}
	}
	return b.reason, b.since
}

// seconds is how long publishing has been failing, 0 while it succeeds.
func (b *blockage) seconds(now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() {
		return 0
	}
	return now.Sub(b.since).Seconds()
}

// blockReason says, for a person, why a publish to subject in region
// failed.
func blockReason(region, subject string, err error) string {
	stream := "READINGS"
	if _, err := protocol.ParseSubject(subject); err != nil { // not a reading: a dead letter
		stream = "DEADLETTER"
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFailed:
		return stream + " full in " + region + ": " + apiErr.Description
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeInsufficientResources || apiErr.ErrorCode == errCodeStorageExceeded):
		return "JetStream in " + region + " out of storage: " + apiErr.Description
	case errors.As(err, &apiErr):
		return "JetStream in " + region + " refuses " + stream + " publishes: " + apiErr.Description
	case errors.Is(err, errNoResponders):
		return "no " + stream + " answers in " + region + " (stream missing or JetStream down)"
	case errors.Is(err, errPublishTimeout):
		return "JetStream in " + region + " does not answer"
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed):
		return "NATS in " + region + " unreachable"
	default:
		return "publishing to " + stream + " in " + region + ": " + err.Error()
	}
}

// JetStream's error codes for a stream that refused a message for lack of
// room: its own limits (nats-server's JSStreamStoreFailedF, "maximum bytes
// exceeded" and the like) or the server's storage
// (JSInsufficientResourcesErr, JSStorageResourcesExceededErr).
const (
	errCodeStoreFailed           = 10077
	errCodeInsufficientResources = 10023
	errCodeStorageExceeded       = 10047
)

// heartbeat publishes ingest's stream.IngestHeartbeat every
// stream.HeartbeatInterval until ctx ends.
// A heartbeat that cannot be sent (NATS away) is skipped.
func (in *Ingest) heartbeat(ctx context.Context) {
	t := time.NewTicker(stream.HeartbeatInterval)
	defer t.Stop()
	subject := stream.HeartbeatSubject(in.cfg.Region)
	for {
		hb := in.Heartbeat(time.Now())
		if b, err := json.Marshal(hb); err == nil {
			_ = in.nc.Publish(subject, b)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Heartbeat is ingest's state now, as it publishes it.
func (in *Ingest) Heartbeat(now time.Time) stream.IngestHeartbeat {
	st := in.Stats()
	hb := stream.IngestHeartbeat{Region: in.cfg.Region, Time: now.UTC(), Accepted: st.Accepted}
	for _, n := range st.Rejected {
		hb.Rejected += n
	}
	hb.Blocked, hb.Since = in.blocked.state(now)
	return hb
}
