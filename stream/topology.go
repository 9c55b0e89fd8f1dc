package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
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

	// ReadingsMaxAge and ReadingsMaxBytes bound READINGS in each region:
	// its buffer. When full, the oldest readings make room (DiscardOld).
	// Every region holds every region's readings, so each fills at the
	// whole fleet's rate; storage normally stored a reading within a second
	// of its arrival, so what goes is long stored and replicated. Only when
	// storage is behind by more than the whole buffer does a reading go
	// unstored: storage counts each such reading (the gap it finds in the
	// stream) and the ledger lists them as lost, by device, with that
	// reason. Refusing new readings instead (DiscardNew) stopped the whole
	// pipeline behind a full stream, stored readings and all, until they
	// aged out (Budget, docs/ARCHITECTURE.md).
	ReadingsMaxAge   time.Duration
	ReadingsMaxBytes int64

	// DuplicateWindow is how long a Nats-Msg-Id is remembered, in READINGS
	// and DEADLETTER alike, to collapse re-sent readings and redelivered
	// dead letters. It must not exceed either stream's max age.
	// DefaultDuplicateWindow says what it costs and what it covers.
	DuplicateWindow time.Duration

	// DeadLetterMaxAge and DeadLetterMaxBytes bound DEADLETTER the same
	// way: the oldest dead letters make room for new ones, so that a flood
	// of hostile payloads cannot stop a region's ingest.
	DeadLetterMaxAge   time.Duration
	DeadLetterMaxBytes int64

	// Storage is file or memory; tests and the demo use file.
	Storage jetstream.StorageType

	// Replicas is how many servers of a region's cluster hold each
	// stream: 1 (the default) for a region of one server, 3 for a
	// cluster of three, which keeps the streams through one server's loss.
	Replicas int
}

// DefaultReadingsBudget is READINGS' default byte limit in each region:
// 1 GiB, about 5 h of the demo's 150 readings/s and 9 min of 5,000/s
// (Budget).
const DefaultReadingsBudget = 1 << 30

// DefaultDuplicateWindow is the default DuplicateWindow: 30 s.
//
// What it covers: a copy re-sent by the pipeline itself (ingest publishing
// again a reading JetStream stored but did not acknowledge, the broker
// redelivering to a restarted ingest, a device re-sending after it
// reconnected) follows its first copy by the length of the outage that
// caused it. Within the window JetStream keeps one copy; after it both
// reach storage, where ClickHouse's ReplacingMergeTree keeps one (FINAL
// counts it once) and storage's --check-all drops it before the insert.
//
// What it costs: every region remembers every reading's id for the window,
// its own and the ones it sources (nats-server applies the window to
// sourced messages too), as several small objects per id in the Go heap.
// At 5,000 readings/s, measured: after 3 minutes of load the demo with a
// 2-minute window took 1,444 MiB and with 30 s 732 MiB, and the marking
// of those ids by Go's collector made every hop's tail slower (PUBACK p99
// 353 against 87 ms; docs/BENCH.md, "The duplicate window"). nats-server
// issue #8485 reports the same growth with the number of ids.
const DefaultDuplicateWindow = 30 * time.Second

// minDuplicateWindow is the shortest window nats-server accepts.
const minDuplicateWindow = 100 * time.Millisecond

// DefaultTopology returns the limits used by the demo and compose.
func DefaultTopology(regions []string) Topology {
	return Topology{
		Regions:            regions,
		ReadingsMaxAge:     24 * time.Hour,
		ReadingsMaxBytes:   DefaultReadingsBudget,
		DuplicateWindow:    DefaultDuplicateWindow,
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
	if t.DuplicateWindow < minDuplicateWindow {
		return fmt.Errorf("topology: duplicate window %v is shorter than nats-server's minimum %v", t.DuplicateWindow, minDuplicateWindow)
	}
	if t.ReadingsMaxBytes < minBudget {
		return fmt.Errorf("topology: READINGS budget %d bytes is below the minimum of %d", t.ReadingsMaxBytes, minBudget)
	}
	if t.Replicas < 0 || t.Replicas > 5 {
		return fmt.Errorf("topology: %d replicas: want 1 to 5 (JetStream's limit)", t.Replicas)
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

// ReadingsConfig is READINGS in region: its own subjects, plus a source per
// other region filtered to that region's own subjects, so nothing loops back.
//
// Each source is an ephemeral consumer that nats-server creates in the
// other region, starting right after what this region's store says it
// holds of it: a restarted or reconnected source neither skips nor copies
// a reading. (Durable sourcing, a consumer kept in the other region and
// reset by the source, was tried and dropped: a reset answers with the
// consumer's delivered sequence, which can already count readings sent
// while the source was not subscribed, and the source then skipped them;
// 7,373 of 20,000 in one run of TestSourcesResumeRightAfterRegionsReturn.)
// A request for a consumer sent while the other region is away is never
// answered, and nats-server waits 30 s before asking again
// (nats-io/nats-server#6454); Mender restarts such a source as soon as the
// other region answers.
func (t Topology) ReadingsConfig(region string) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        ReadingsStream,
		Description: "readings of every region; " + region + "'s own are published here, the others are sourced",
		Subjects:    []string{protocol.ReadingsOf(region)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.ReadingsMaxAge,
		MaxBytes:    t.ReadingsMaxBytes,
		Duplicates:  t.DuplicateWindow,
		Storage:     t.Storage,
		Replicas:    max(t.Replicas, 1),
	}
	for _, other := range t.Regions {
		if other == region {
			continue
		}
		cfg.Sources = append(cfg.Sources, t.source(other))
	}
	return cfg
}

// source is READINGS' source of other's readings.
func (t Topology) source(other string) *jetstream.StreamSource {
	return &jetstream.StreamSource{Name: ReadingsStream, FilterSubject: protocol.ReadingsOf(other), Domain: other}
}

// DeadLetterConfig is DEADLETTER in region: rejected payloads, kept as sent.
// Ingest gives each dead letter a Nats-Msg-Id (ingest.DeadLetterID), so a
// hostile message the broker redelivers is stored once within the
// duplicate window.
func (t Topology) DeadLetterConfig(region string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "payloads rejected by " + region + "'s ingest, original bytes, reason in headers",
		Subjects:    []string{protocol.DeadLettersOf(region)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.DeadLetterMaxAge,
		MaxBytes:    t.DeadLetterMaxBytes,
		Duplicates:  t.DuplicateWindow,
		Storage:     t.Storage,
		Replicas:    max(t.Replicas, 1),
	}
}

// Apply creates or updates the streams of every region of the topology;
// rs must address each region's domain. Applying the same topology again
// changes nothing.
func (t Topology) Apply(ctx context.Context, rs Regions) error {
	for _, region := range t.Regions {
		js, ok := rs[region]
		if !ok {
			return fmt.Errorf("applying the topology: no connection to region %s", region)
		}
		for _, cfg := range []jetstream.StreamConfig{t.ReadingsConfig(region), t.DeadLetterConfig(region)} {
			if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
				return fmt.Errorf("applying stream %s in %s: %w", cfg.Name, region, err)
			}
		}
	}
	return nil
}
