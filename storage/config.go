package storage

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// Defaults used for zero fields of Config.
const (
	DefaultNATSURL        = "nats://127.0.0.1:4222"
	DefaultDomain         = "us-east"
	DefaultStream         = "READINGS"
	DefaultDurable        = stream.StorageConsumer
	DefaultClickHouseAddr = "127.0.0.1:9000"
	DefaultClickHouseUser = deploy.ClickHouseWriterUser
	DefaultHistoryUser    = deploy.ClickHouseReaderUser
	DefaultDatabase       = "telemetry"
	DefaultBatchSize      = 20000
	// MaxFetchBytes bounds one fetch, subjects and headers included
	// (fetchBytes).
	MaxFetchBytes          = 8 << 20
	DefaultFlushInterval   = 500 * time.Millisecond
	DefaultAckWait         = 30 * time.Second
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultMaxRetryBackoff = 5 * time.Second
	DefaultDrainTimeout    = 10 * time.Second
	DefaultPendingInterval = 2 * time.Second
	DefaultListen          = "127.0.0.1:8081"
	DefaultFailoverAfter   = 10 * time.Second
	DefaultFailoverMargin  = time.Minute
)

// NoListen as Config.Listen serves no HTTP: the caller mounts Handler
// wherever it likes.
const NoListen = "none"

// Config configures a Writer. Zero fields take the defaults above, so a test
// can set only what it cares about.
type Config struct {
	// NATSURL is the client URL of the region's NATS server, credentials
	// included (nats://user:password@host:port).
	NATSURL string
	// Domain is the region's JetStream domain (the region name). Its
	// READINGS stream holds every region's readings, so one writer stores
	// them all.
	Domain string
	// Stream is the stream consumed, Durable the name of the durable pull
	// consumer that remembers how far the writer got. Writers on one
	// durable share its readings.
	Stream  string
	Durable string
	// Instance tells apart writers sharing the durable whose metrics meet
	// on one /metrics (telemetry demo --writers): their series carry
	// writer=<Instance>. Empty: no such label.
	Instance string

	// ClickHouseAddr is host:port of ClickHouse's native protocol (the HTTP
	// protocol is not supported: clickhouse-go's fails on 18.16). For a
	// cluster it may list several members, comma-separated: each
	// connection goes to the first that answers.
	ClickHouseAddr string
	// Cluster is the name of the ClickHouse cluster (its remote_servers)
	// that ClickHouseAddr's servers belong to, or "" for one server. With
	// a cluster the migrations create replicated tables on every member
	// and Distributed tables over them (migrations/cluster), and inserts
	// wait until every shard holds its rows (insert_distributed_sync):
	// a reading is acknowledged to JetStream only once a replica of its
	// shard stored it.
	Cluster string
	// ClickHouseUser and ClickHousePassword are the writer's: it creates
	// and migrates the schema, inserts, and reads back (deduplication, the
	// ledger). A zero user is DefaultClickHouseUser, with
	// deploy.DemoClickHouseWriterPassword when the password is zero too.
	ClickHouseUser     string
	ClickHousePassword string
	// HistoryUser and HistoryPassword are the read-only user of a second
	// connection that serves only /api/history, the dashboard's history.
	// A zero user is DefaultHistoryUser, with
	// deploy.DemoClickHouseReaderPassword when the password is zero too.
	HistoryUser     string
	HistoryPassword string
	// Database holds the readings table; migrations create it.
	Database string

	// BatchSize is the most readings inserted at once: a backlog is
	// caught up 20,000 at a time, where an insert costs least per row.
	// With v2 batches it is a target: a fetch asks for BatchSize divided
	// by the largest batch of the previous fetch, within fetchBytes.
	// FlushInterval is the longest a reading waits for its batch to fill:
	// half a second keeps device-to-stored under a second at load-test
	// rates, for two inserts a second (docs/STORAGE.md). The batch is the
	// writer's only queue: it is fetched only when the previous one is
	// stored, so the backlog stays in JetStream (policy: block).
	BatchSize     int
	FlushInterval time.Duration
	// AckWait is how long JetStream waits for an acknowledgement before it
	// delivers a reading again. While an insert is being retried the writer
	// keeps extending it.
	AckWait time.Duration
	// MaxAckPending bounds the readings delivered and not yet acknowledged;
	// default twice BatchSize.
	MaxAckPending int
	// RetryBackoff is the first pause between insert retries; it doubles up
	// to MaxRetryBackoff. Retries go on until ClickHouse takes the batch or
	// the writer stops: the readings are safe in JetStream meanwhile and
	// nothing is acknowledged before it is stored.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// DrainTimeout bounds how long Run, once its context is cancelled, keeps
	// trying to store the batch in hand. If it cannot, the batch is handed
	// back to JetStream (negatively acknowledged) for the next run.
	DrainTimeout time.Duration
	// CheckAll looks every reading up in ClickHouse before inserting it,
	// not only those JetStream delivers again or whose insert failed. It
	// also keeps out copies that the stream holds twice (published again
	// after the stream's duplicate window), for one more query per batch.
	CheckAll bool
	// PendingInterval is how often the consumer's backlog is asked for.
	PendingInterval time.Duration

	// Fallbacks are the regions to consume from, in order, when Domain's
	// server is gone (see failover.go). Every region's READINGS holds every
	// region's readings, so any of them will do.
	Fallbacks []Fallback
	// FailoverAfter is how long the current region may stay unusable
	// (server unreachable, stream or consumer failing) before the writer
	// moves to the next region; and how long the home region must answer
	// again before the writer moves back to it.
	FailoverAfter time.Duration
	// FailoverMargin is how far before the last stored reading the
	// consumer in the new region starts: it covers readings that ingest
	// published out of order and clock differences between servers.
	// Readings in the overlap are looked up before insertion.
	FailoverMargin time.Duration

	// Listen is the HTTP address of /healthz, /metrics, /api/status and
	// /api/ledger. Port 0 picks a free port (see Addr); NoListen serves
	// nothing.
	Listen string
	// APIToken, if set, lets a reader on another machine use /api/*:
	// it sends Authorization: Bearer <APIToken>. Without it /api/*
	// answers only requests from this machine (loopback); /healthz and
	// /metrics answer everyone.
	APIToken string
}

// Fallback is a region the writer can consume from instead of its own.
type Fallback struct {
	Region  string // JetStream domain
	NATSURL string // client URL of the region's server, credentials included
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.NATSURL, DefaultNATSURL)
	set(&c.Domain, DefaultDomain)
	set(&c.Stream, DefaultStream)
	set(&c.Durable, DefaultDurable)
	set(&c.ClickHouseAddr, DefaultClickHouseAddr)
	if c.ClickHouseUser == "" {
		c.ClickHouseUser = DefaultClickHouseUser
		set(&c.ClickHousePassword, deploy.DemoClickHouseWriterPassword)
	}
	if c.HistoryUser == "" {
		c.HistoryUser = DefaultHistoryUser
		set(&c.HistoryPassword, deploy.DemoClickHouseReaderPassword)
	}
	set(&c.Database, DefaultDatabase)
	set(&c.Listen, DefaultListen)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 2 * c.BatchSize
	}
	setD(&c.FlushInterval, DefaultFlushInterval)
	setD(&c.AckWait, DefaultAckWait)
	setD(&c.RetryBackoff, DefaultRetryBackoff)
	setD(&c.MaxRetryBackoff, DefaultMaxRetryBackoff)
	setD(&c.DrainTimeout, DefaultDrainTimeout)
	setD(&c.PendingInterval, DefaultPendingInterval)
	setD(&c.FailoverAfter, DefaultFailoverAfter)
	setD(&c.FailoverMargin, DefaultFailoverMargin)
	return c
}

// clickHouseAddrs splits Config.ClickHouseAddr's list.
func clickHouseAddrs(list string) []string {
	addrs := strings.Split(list, ",")
	for i := range addrs {
		addrs[i] = strings.TrimSpace(addrs[i])
	}
	return addrs
}

// identifier is what Database may be: it is spliced into SQL.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case !identifier.MatchString(c.Database):
		return fmt.Errorf("storage: database %q: want letters, digits and underscores", c.Database)
	case c.Cluster != "" && !identifier.MatchString(c.Cluster):
		return fmt.Errorf("storage: cluster %q: want letters, digits and underscores", c.Cluster)
	case slices.Contains(clickHouseAddrs(c.ClickHouseAddr), ""):
		return fmt.Errorf("storage: ClickHouse address %q: want host:port[,host:port...]", c.ClickHouseAddr)
	case c.BatchSize < 1:
		return errors.New("storage: batch size must be at least 1")
	case c.MaxAckPending < c.BatchSize:
		return fmt.Errorf("storage: max ack pending (%d) must be at least the batch size (%d)", c.MaxAckPending, c.BatchSize)
	case c.FlushInterval < 10*time.Millisecond:
		return fmt.Errorf("storage: flush interval %s is too short (at least 10ms)", c.FlushInterval)
	case c.AckWait < time.Second:
		return fmt.Errorf("storage: ack wait %s is too short (at least 1s)", c.AckWait)
	case c.AckWait <= c.FlushInterval:
		return fmt.Errorf("storage: ack wait (%s) must be longer than the flush interval (%s)", c.AckWait, c.FlushInterval)
	case c.RetryBackoff < 0 || c.MaxRetryBackoff < c.RetryBackoff:
		return fmt.Errorf("storage: retry backoff %s to %s: want 0 < first <= max", c.RetryBackoff, c.MaxRetryBackoff)
	case c.DrainTimeout < 0 || c.PendingInterval < 0 || c.FailoverMargin < 0:
		return errors.New("storage: durations must not be negative")
	case c.FailoverAfter < 500*time.Millisecond:
		return fmt.Errorf("storage: failover after %s is too short (at least 500ms)", c.FailoverAfter)
	}
	seen := map[string]bool{c.Domain: true}
	for _, f := range c.Fallbacks {
		switch {
		case f.Region == "" || f.NATSURL == "":
			return fmt.Errorf("storage: fallback %q=%q: want a region and its NATS URL", f.Region, f.NATSURL)
		case seen[f.Region]:
			return fmt.Errorf("storage: fallback region %q listed twice or is the home region", f.Region)
		}
		seen[f.Region] = true
	}
	return nil
}

// v1MessageBytes is about what a v1 reading of a few metrics takes in
// READINGS, subject and headers included (300 bytes for the simulator's).
const v1MessageBytes = 400

// fetchBytes bounds one fetch of a writer of batchSize readings: as many
// bytes as batchSize v1 readings take, so that v1 fetches stay bound by
// their count while a fetch of v2 batches (up to protocol.MaxBatchReadings
// readings each), whose size per message the writer learns only from the
// previous fetch, stays near batchSize readings' bytes. At least two of
// the largest messages (a fetch cannot split one) and at most
// MaxFetchBytes.
func fetchBytes(batchSize int) int {
	return min(MaxFetchBytes, max(4*protocol.MaxBatchBytes, batchSize*v1MessageBytes))
}
