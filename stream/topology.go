package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names, the same in every region's domain.
const (
	ReadingsStream   = "READINGS"
	DeadLetterStream = "DEADLETTER"
)

// DefaultRegions are the demo's regions, in display order.
var DefaultRegions = []string{"us-east", "eu-west", "ap-south"}

// Topology is the declarative description of the streams in every region.
// The demo, the tests and `telemetry stream` all apply the same one.
type Topology struct {
	Regions []string

	// ReadingsMaxAge and ReadingsMaxBytes bound READINGS in each region.
	// When full, new readings are refused (DiscardNew) so that ingest stops
	// acknowledging MQTT and the broker holds them: nothing is dropped
	// silently.
	ReadingsMaxAge   time.Duration
	ReadingsMaxBytes int64

	// DuplicateWindow is how long a Nats-Msg-Id is remembered, in READINGS
	// and DEADLETTER alike, to collapse re-sent readings and redelivered
	// dead letters. It must not exceed either stream's max age.
	DuplicateWindow time.Duration

	DeadLetterMaxAge   time.Duration
	DeadLetterMaxBytes int64

	// Storage is file or memory; tests and the demo use file.
	Storage jetstream.StorageType
}

// DefaultTopology returns the limits used by the demo and compose.
func DefaultTopology(regions []string) Topology {
	return Topology{
		Regions:            regions,
		ReadingsMaxAge:     24 * time.Hour,
		ReadingsMaxBytes:   2 << 30,
		DuplicateWindow:    2 * time.Minute,
		DeadLetterMaxAge:   7 * 24 * time.Hour,
		DeadLetterMaxBytes: 256 << 20,
		Storage:            jetstream.FileStorage,
	}
}

// Validate checks the topology without touching the network.
func (t Topology) Validate() error {
	if len(t.Regions) == 0 {
		return errors.New("topology: no regions")
	}
	seen := map[string]bool{}
	for _, r := range t.Regions {
		if !validRegion(r) {
			return fmt.Errorf("topology: region %q: want lower-case letters, digits and dashes", r)
		}
		if seen[r] {
			return fmt.Errorf("topology: region %q listed twice", r)
		}
		seen[r] = true
	}
	if t.DuplicateWindow <= 0 {
		return errors.New("topology: duplicate window must be positive")
	}
	for _, age := range []time.Duration{t.ReadingsMaxAge, t.DeadLetterMaxAge} {
		if age > 0 && age < t.DuplicateWindow {
			return fmt.Errorf("topology: duplicate window %v is longer than a stream's max age %v", t.DuplicateWindow, age)
		}
	}
	return nil
}

func validRegion(r string) bool {
	if r == "" || len(r) > 63 {
		return false
	}
	for i, c := range r {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0
		if !ok {
			return false
		}
	}
	return true
}

// ReadingsSubject is the subject of region's own readings, as published by
// its ingest.
func ReadingsSubject(region string) string { return "telemetry." + region + ".>" }

// DeadLetterSubject is the subject a payload rejected in region for reason goes to.
func DeadLetterSubject(region, reason string) string { return "deadletter." + region + "." + reason }

// ReadingsConfig is READINGS in region: its own subjects, plus a source per
// other region. Each source reads a durable consumer that the other region
// keeps for this one (ReplicationConsumerConfig), filtered to that region's
// own subjects, so nothing loops back.
//
// Durable sourcing, not the ephemeral consumers a plain source creates, is
// what lets a region catch up within seconds of another returning. A source
// asks the other region over the hub to create (ephemeral) or reset
// (durable) its consumer; a request sent while that region is away (not
// started yet, restarting, cut off) is never answered. nats-server (v2.15)
// then waits 30 s for an ephemeral consumer before asking again, and does
// not ask again earlier when the region returns (nats-io/nats-server#6454
// asks for the wait to be configurable). After a demo restart that stalled
// replication for 30-40 s (TestSourcesResumeRightAfterRegionsReturn). For a
// durable consumer it waits 5 s, then watches the consumer's heartbeats and
// asks again as soon as they arrive.
func (t Topology) ReadingsConfig(region string) jetstream.StreamConfig {
	cfg := t.readingsOwnConfig(region)
	for _, other := range t.Regions {
		if other == region {
			continue
		}
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{
			Name:   ReadingsStream,
			Domain: other,
			Consumer: &jetstream.StreamConsumerSource{
				Name:           ReplicationConsumer(region),
				DeliverSubject: replicationSubject(other, region),
			},
		})
	}
	return cfg
}

// readingsOwnConfig is READINGS in region without its sources.
func (t Topology) readingsOwnConfig(region string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ReadingsStream,
		Description: "readings of every region; " + region + "'s own are published here, the others are sourced",
		Subjects:    []string{ReadingsSubject(region)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      t.ReadingsMaxAge,
		MaxBytes:    t.ReadingsMaxBytes,
		Duplicates:  t.DuplicateWindow,
		Storage:     t.Storage,
		Replicas:    1,
	}
}

// ReplicationConsumer is the name of the durable consumer, on every other
// region's READINGS, that feeds region to's source of it.
func ReplicationConsumer(to string) string { return "REPLICATE-" + to }

// replicationSubject is where from's replication consumer for to pushes.
func replicationSubject(from, to string) string { return "replicate." + from + "." + to }

// replicationMaxAckPending bounds the readings a replication consumer has
// in flight before the sourcing region's flow-control reply: two seconds
// at 5,000 readings/s, far more than a round trip over the hub needs
// (BenchmarkReplicationBurst converges within half a second of a burst at
// 40,000/s). The server writes the consumer's pending set to disk up to
// ten times a second, so a larger window costs CPU for nothing.
const replicationMaxAckPending = 10_000

// ReplicationConsumerConfig is the durable push consumer on from's READINGS
// that to's READINGS sources from: from's own readings, delivered with flow
// control and acknowledged by it (AckFlowControl), so that from's stream
// remembers how far to has stored.
func (t Topology) ReplicationConsumerConfig(from, to string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ReplicationConsumer(to),
		Description:    from + "'s own readings, replicated to " + to,
		DeliverSubject: replicationSubject(from, to),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubject:  ReadingsSubject(from),
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		// nats-server requires exactly 1 s for AckFlowControl.
		IdleHeartbeat: time.Second,
		MaxAckPending: replicationMaxAckPending,
	}
}

// DeadLetterConfig is DEADLETTER in region: rejected payloads, kept as sent.
// Ingest gives each dead letter a Nats-Msg-Id (ingest.DeadLetterID), so a
// hostile message the broker redelivers is stored once within the
// duplicate window.
func (t Topology) DeadLetterConfig(region string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "payloads rejected by " + region + "'s ingest, original bytes, reason in headers",
		Subjects:    []string{"deadletter." + region + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      t.DeadLetterMaxAge,
		MaxBytes:    t.DeadLetterMaxBytes,
		Duplicates:  t.DuplicateWindow,
		Storage:     t.Storage,
		Replicas:    1,
	}
}

// Apply creates or updates the streams and replication consumers of every
// region of the topology; rs must address each region's domain. Applying
// the same topology again changes nothing.
//
// It runs in two passes, so that no source ever asks for a consumer that
// does not exist yet (nats-server would back off for 10 s or more): first
// every region's streams without sources and the replication consumers
// the other regions will read, then every READINGS with its sources.
func (t Topology) Apply(ctx context.Context, rs Regions) error {
	for _, region := range t.Regions {
		if _, ok := rs[region]; !ok {
			return fmt.Errorf("applying the topology: no connection to region %s", region)
		}
	}
	for _, region := range t.Regions {
		js := rs[region]
		if _, err := js.CreateOrUpdateStream(ctx, t.DeadLetterConfig(region)); err != nil {
			return fmt.Errorf("applying stream %s in %s: %w", DeadLetterStream, region, err)
		}
		if _, err := js.CreateStream(ctx, t.readingsOwnConfig(region)); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("creating stream %s in %s: %w", ReadingsStream, region, err)
		}
		for _, to := range t.Regions {
			if to == region {
				continue
			}
			if err := t.applyReplicationConsumer(ctx, rs, region, to); err != nil {
				return err
			}
		}
	}
	for _, region := range t.Regions {
		if _, err := rs[region].CreateOrUpdateStream(ctx, t.ReadingsConfig(region)); err != nil {
			return fmt.Errorf("applying stream %s in %s: %w", ReadingsStream, region, err)
		}
	}
	return nil
}

// applyReplicationConsumer creates or updates from's replication consumer
// for to. A consumer that does not exist yet, or that is ahead of what to
// holds (to's store was replaced), starts right after the newest of from's
// readings that to holds, so that to gets neither a gap nor a second copy
// of what it has (older than the duplicate window, a copy would be kept).
func (t Topology) applyReplicationConsumer(ctx context.Context, rs Regions, from, to string) error {
	cfg := t.ReplicationConsumerConfig(from, to)
	readings, err := rs[from].Stream(ctx, ReadingsStream)
	if err != nil {
		return fmt.Errorf("applying consumer %s in %s: %w", cfg.Durable, from, err)
	}
	held, err := heldOrigin(ctx, rs[to], from)
	if err != nil {
		return fmt.Errorf("applying consumer %s in %s: reading what %s holds: %w", cfg.Durable, from, to, err)
	}
	existing, err := readings.PushConsumer(ctx, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return fmt.Errorf("applying consumer %s in %s: %w", cfg.Durable, from, err)
	case existing.CachedInfo().AckFloor.Stream > held:
		if err := readings.DeleteConsumer(ctx, cfg.Durable); err != nil {
			return fmt.Errorf("replacing consumer %s in %s, ahead of %s: %w", cfg.Durable, from, to, err)
		}
	default:
		// Keep where it starts: nats-server refuses to change it.
		cur := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq = cur.DeliverPolicy, cur.OptStartSeq
		if _, err := readings.UpdatePushConsumer(ctx, cfg); err != nil {
			return fmt.Errorf("updating consumer %s in %s: %w", cfg.Durable, from, err)
		}
		return nil
	}
	if held > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, held+1
	}
	if _, err := readings.CreatePushConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("creating consumer %s in %s: %w", cfg.Durable, from, err)
	}
	return nil
}

// heldOrigin is the sequence, in from's READINGS, of the newest of from's
// readings that the region js addresses holds; 0 when it holds none.
func heldOrigin(ctx context.Context, js jetstream.JetStream, from string) (uint64, error) {
	s, err := js.Stream(ctx, ReadingsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, ReadingsSubject(from))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return sourceSeq(m.Header.Get(streamSourceHeader)), nil
}
