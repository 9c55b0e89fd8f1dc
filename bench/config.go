package bench

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// The local demo's addresses and users (telemetry demo's defaults): what a
// run targets when given no address.
const (
	DemoBroker     = devices.DefaultBroker
	DemoStorageURL = "http://127.0.0.1:8081"
	DemoMetricsURL = "http://127.0.0.1:8080/metrics"
)

// DefaultDevices and DefaultIDPrefix make the bench's fleet unless told
// otherwise: bench-th-00001 and on, never the demo's own ids.
const (
	DefaultDevices  = 1000
	DefaultIDPrefix = "bench-"
)

// DemoNATS is each region's NATS of the local demo, as the dashboard's
// user: reading READINGS and DEADLETTER needs no more.
var DemoNATS = map[string]string{
	"us-east":  "nats://dashboard:dashboard@127.0.0.1:4222",
	"eu-west":  "nats://dashboard:dashboard@127.0.0.1:4223",
	"ap-south": "nats://dashboard:dashboard@127.0.0.1:4224",
}

// Config configures a run. Zero fields target the local demo.
type Config struct {
	// Fleet is the simulated fleet; its Broker is the pipeline's MQTT
	// broker and its Boot is set by New.
	Fleet devices.Config

	// ClickHouse is the native address storage writes to; empty: the one
	// storage's /api/status at StorageURL names.
	ClickHouse         string
	ClickHouseUser     string // default the read-only deploy.ClickHouseReaderUser
	ClickHousePassword string // default its demo password
	// NATS is each region's NATS URL (region -> URL); default DemoNATS.
	NATS map[string]string
	// StorageURL is storage's HTTP API (default DemoStorageURL); its
	// /metrics is also the pipeline process's when ProcessMetrics is
	// empty.
	StorageURL string
	// StorageToken is storage's --api-token: a storage service on another
	// machine answers /api/status only with it.
	StorageToken string
	// MetricsURLs are the /metrics of the pipeline's parts whose backlogs
	// the run samples (broker, ingest, storage); default DemoMetricsURL,
	// the demo's dashboard, which serves them all.
	MetricsURLs []string
	// ProcessMetrics is the /metrics whose process_* metrics are the
	// pipeline process's CPU and memory; default StorageURL + /metrics.
	// "none" reads none.
	ProcessMetrics string
	// Gatherer, when set, replaces MetricsURLs: an in-process pipeline's
	// metrics (--demo), whose process is the bench's own.
	Gatherer prometheus.Gatherer

	// DrainTimeout is how long to wait for storage without progress once
	// the fleet has stopped.
	DrainTimeout time.Duration
	// Ceiling runs the same fleet against a bare broker first.
	Ceiling bool
	// Agents are the URLs of `telemetry bench --agent` processes that run
	// the fleet, each a disjoint range of its devices; empty: this process
	// runs it. AgentToken is their --agent-token.
	Agents     []string
	AgentToken string
	// SkipStreamHops leaves out the hops timed by reading READINGS in
	// every region (jetstream, replicated-*, feed): their consumers are
	// the bench's own, and they cost the pipeline's servers CPU (docs/BENCH.md).
	SkipStreamHops bool
}

// Defaults for zero fields.
const (
	DefaultDrainTimeout = 60 * time.Second
	DefaultDuration     = 10 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Fleet.Duration <= 0 {
		c.Fleet.Duration = DefaultDuration
	}
	if c.Fleet.Broker == "" {
		c.Fleet.Broker = DemoBroker
	}
	if len(c.Fleet.Regions) == 0 {
		c.Fleet.Regions = stream.DefaultRegions
	}
	if c.ClickHouseUser == "" {
		c.ClickHouseUser, c.ClickHousePassword = deploy.ClickHouseReaderUser, deploy.DemoClickHouseReaderPassword
	}
	if c.NATS == nil {
		c.NATS = DemoNATS
	}
	if c.StorageURL == "" {
		c.StorageURL = DemoStorageURL
	}
	if len(c.MetricsURLs) == 0 && c.Gatherer == nil {
		c.MetricsURLs = []string{DemoMetricsURL}
	}
	if c.ProcessMetrics == "" && c.Gatherer == nil {
		c.ProcessMetrics = c.StorageURL + "/metrics"
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// watched lists the regions the run watches: every region with a NATS
// URL, the demo's in their order first (the first is home, the region the
// dashboard reads), then any others in name order.
func (c Config) watched() []string {
	var out []string
	for _, r := range stream.DefaultRegions {
		if _, ok := c.NATS[r]; ok {
			out = append(out, r)
		}
	}
	var others []string
	for r := range c.NATS {
		if !slices.Contains(out, r) {
			others = append(others, r)
		}
	}
	slices.Sort(others)
	return append(out, others...)
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Fleet.Duration <= 0 {
		return errors.New("bench: a duration is required: the ledger is read once the fleet has stopped")
	}
	for _, r := range c.Fleet.Regions {
		if !protocol.ValidName(r) {
			return fmt.Errorf("bench: region %q: want lower-case letters, digits and dashes", r)
		}
		if c.NATS[r] == "" {
			return fmt.Errorf("bench: no NATS URL for region %s: give --nats %s=nats://host:port,...", r, r)
		}
	}
	if len(c.Agents) > 0 {
		switch {
		case c.Ceiling:
			return errors.New("bench: --ceiling runs the fleet in this process: not with --agents")
		case len(c.AgentToken) < MinAgentToken:
			return fmt.Errorf("bench: --agents needs the agents' --agent-token (at least %d bytes)", MinAgentToken)
		case c.Fleet.Devices > 0 && c.Fleet.Devices < len(c.Agents):
			return fmt.Errorf("bench: %d devices for %d agents: want at least one device each", c.Fleet.Devices, len(c.Agents))
		}
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("bench: drain timeout %v: want 0 or more", c.DrainTimeout)
	}
	return nil
}

// Usage is the help of `telemetry bench`.
const Usage = `Run a fleet of simulated devices against a pipeline, wait until the pipeline
has drained, then read ClickHouse and every region's DEADLETTER stream and
print the conservation ledger: sent, acknowledged by the broker, stored
(distinct), dead-lettered by reason (and whether each hostile message of
--chaos got the reason it should), duplicates, lost (with the missing
(device, boot, seq) ranges); the latency of every hop as HDR histograms
(--histogram-log writes them in HdrHistogram's log format), what queued at
each stage and which one limited the run, and the pipeline process's CPU
and memory. Exits non-zero when anything was lost or misclassified. See
docs/BENCH.md.

With no address flags it targets the local demo (telemetry demo, make demo)
at its default addresses and users. --ceiling first runs the same fleet
against a bare broker with one plain subscriber, and reports the pipeline's
pace as a share of it. --demo starts an in-process pipeline instead (the
fleet then shares the process, so its CPU is not reported).

--batch N makes the fleet publish protocol v2 batches of up to N readings;
the ledger, the rates and the latencies stay per reading (a reading's
latency includes its wait for its batch).

--agent waits for a coordinator and runs the part of a fleet it asks for;
--agents URL,... is that coordinator: it splits the fleet over the agents
in disjoint ranges of devices, starts them together and merges their
ledgers and histograms into one report (docs/BENCH.md, "One fleet over
several machines").`
