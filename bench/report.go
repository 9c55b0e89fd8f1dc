package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/telemetry-demo/telemetry/ledger"
)

// Report is the conservation ledger of one run, with what each hop took
// and what limited it (--json prints it). docs/BENCH.md documents every
// field.
type Report struct {
	OK         bool    `json:"ok"`
	Devices    int     `json:"devices"`
	IDPrefix   string  `json:"id_prefix"`
	Boot       uint64  `json:"boot"`
	TargetRate float64 `json:"target_rate"`
	// ReadingsPerMessage is how many readings a device's message carried:
	// 1 for protocol v1, about --batch for v2 (devices.Config's). The
	// backlogs, counted by JetStream in messages, are turned into readings
	// with it.
	ReadingsPerMessage int     `json:"readings_per_message"`
	PublishSecs        float64 `json:"publish_seconds"`
	RampUpSecs         float64 `json:"ramp_up_seconds"`
	AchievedRate       float64 `json:"achieved_rate"`
	// StoredRate is readings stored per second, from the first publish to
	// the last reading stored: the whole pipeline's pace.
	StoredRate float64 `json:"stored_rate"`
	// Counts are the run's readings: sent, acknowledged, stored, lost.
	ledger.Counts
	Skipped uint64 `json:"skipped"`
	// RejectedReadings counts this run's readings found in DEADLETTER, by
	// reason: valid readings the pipeline refused. Must be empty.
	RejectedReadings map[string]uint64 `json:"rejected_readings"`
	Missing          []ledger.Range    `json:"missing"`
	DeadLettered     map[string]uint64 `json:"dead_lettered"`
	Hostile          HostileReport     `json:"hostile"`
	Duplicates       DuplicateReport   `json:"duplicates"`
	Behaviours       BehaviourReport   `json:"behaviours"`
	DrainSecs        float64           `json:"drain_seconds"`
	// Latency is each hop's latency from the reading's measurement (see
	// the Hop names), corrected for coordinated omission.
	Latency map[string]Percentiles `json:"latency"`
	// Ceiling is the same fleet against the bare broker, when asked.
	Ceiling *CeilingReport `json:"ceiling,omitempty"`
	// Backlog is what queued up at each stage, at its peak.
	Backlog BacklogReport `json:"backlog"`
	// Bottleneck names the stage that limited the run, in words.
	Bottleneck string `json:"bottleneck"`
	// Pipeline is the pipeline process's CPU and memory, when the bench
	// can read its metrics (a separate process).
	Pipeline *ProcessReport `json:"pipeline_process,omitempty"`
	Problems []string       `json:"problems"`
	// Agents are the agents' shares of a run with Config.Agents.
	Agents []AgentReport `json:"agents,omitempty"`
}

// HostileReport accounts for the hostile messages of --chaos.
type HostileReport struct {
	Sent          uint64                   `json:"sent"`
	Acked         uint64                   `json:"acked"`
	DeadLettered  uint64                   `json:"dead_lettered"`
	AsExpected    uint64                   `json:"as_expected"`
	Misclassified uint64                   `json:"misclassified"`
	Missing       uint64                   `json:"missing"`
	Unconfirmed   uint64                   `json:"unconfirmed"`
	ByReason      map[string]*ReasonLedger `json:"by_reason"`
	Examples      []Misclassified          `json:"misclassified_examples"`
}

// ReasonLedger is the hostile messages expected under one reason.
type ReasonLedger struct {
	Expected      uint64         `json:"expected"`
	AsExpected    uint64         `json:"as_expected"`
	Misclassified uint64         `json:"misclassified"`
	Missing       uint64         `json:"missing"`
	Cases         map[string]int `json:"cases"`
}

// Misclassified is a hostile message dead-lettered under another reason
// than expected, or (Got empty) acknowledged and never dead-lettered.
type Misclassified struct {
	Marker   string `json:"marker"`
	Case     string `json:"case"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
	Detail   string `json:"detail,omitempty"`
}

// DuplicateReport says what became of readings delivered more than once.
type DuplicateReport struct {
	Sent               uint64  `json:"sent"`
	Resent             uint64  `json:"resent"`
	SuppressedByStream *uint64 `json:"suppressed_by_stream"`
	// ByDevice is what JetStream suppressed during the run for each of the
	// run's devices that had one (ingest's
	// telemetry_ingest_duplicates_by_device_total): resends, duplicates
	// sent on purpose, or someone else's reading forged with the device's
	// identity. Nil when the pipeline's metrics cannot be read.
	ByDevice     map[string]uint64 `json:"suppressed_by_device,omitempty"`
	UnmergedRows uint64            `json:"unmerged_rows"`
}

// BehaviourReport counts the device behaviours of the run.
type BehaviourReport struct {
	Reboots         uint64 `json:"reboots"`
	Boots           int    `json:"boots"`
	Reordered       uint64 `json:"reordered"`
	ClockSkewMs     int64  `json:"clock_skew_ms"`
	ConnectionsLost uint64 `json:"connections_lost"`
	PublishErrors   uint64 `json:"publish_errors"`
}

// CeilingReport is the same fleet, in the same run, against a bare
// embedded broker with one plain subscriber: the most the broker can pass
// on this machine, which the pipeline is measured against.
type CeilingReport struct {
	Sent     uint64  `json:"sent"`
	Received uint64  `json:"received"`
	Seconds  float64 `json:"seconds"` // first publish to last received
	Rate     float64 `json:"rate"`    // received per second
	// Share is the pipeline's StoredRate over Rate.
	Share float64 `json:"share"`
}

// BacklogReport is the most that queued at each stage during the run.
type BacklogReport struct {
	// PublishersHeld is the most devices the broker held back at once,
	// because ingest had too much in flight (embedded broker only).
	PublishersHeld float64 `json:"publishers_held"`
	// IngestInflight is the most readings ingest had between the broker
	// and JetStream's acknowledgement, all regions together.
	IngestInflight float64 `json:"ingest_inflight"`
	// Replication is, per "to<-from" pair, the most of from's messages
	// that to did not hold yet.
	Replication map[string]uint64 `json:"replication"`
	// StoragePending is the most messages storage's consumer had not
	// stored yet.
	StoragePending uint64 `json:"storage_pending"`
}

// ProcessReport is the pipeline process's resources during the run.
type ProcessReport struct {
	Cores      float64 `json:"cores"` // CPU seconds per second of the run
	MaxRSSMiB  float64 `json:"max_rss_mib"`
	SampledFor float64 `json:"sampled_seconds"`
}

// Write prints r for a reader.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "conservation ledger: %s\n", verdict)
	fmt.Fprintf(&b, "  devices            %d (ids %s*, boot %d)\n", r.Devices, r.IDPrefix, r.Boot)
	fmt.Fprintf(&b, "  rate               %.1f/s published of %.1f/s asked, over %.1f s; %.1f/s stored, first publish to last stored\n",
		r.AchievedRate, r.TargetRate, r.PublishSecs, r.StoredRate)
	if c := r.Ceiling; c != nil {
		fmt.Fprintf(&b, "  broker ceiling     %.1f/s (bare broker, one plain subscriber, same fleet: %d of %d received in %.1f s): the pipeline ran at %.0f %% of it\n",
			c.Rate, c.Received, c.Sent, c.Seconds, 100*c.Share)
	}
	fmt.Fprintf(&b, "  sent               %d readings   (%d due readings skipped: device outbox full)\n", r.Sent, r.Skipped)
	fmt.Fprintf(&b, "  acked by broker    %d\n", r.Acked)
	fmt.Fprintf(&b, "  stored (distinct)  %d   (drained in %.1f s)\n", r.Stored, r.DrainSecs)
	fmt.Fprintf(&b, "  unconfirmed        %d   (sent without PUBACK, not stored)\n", r.Unconfirmed)
	fmt.Fprintf(&b, "  LOST               %d\n", r.Lost)
	for i, a := range r.Agents {
		fmt.Fprintf(&b, "    agent %d  %s  devices %d..%d: sent %d, acked %d, stored %d, lost %d\n",
			i+1, a.URL, a.FirstDevice+1, a.FirstDevice+a.Devices, a.Sent, a.Acked, a.Stored, a.Lost)
	}
	for i, m := range r.Missing {
		if i == 20 {
			fmt.Fprintf(&b, "    ... %d more ranges (see --json)\n", len(r.Missing)-20)
			break
		}
		fmt.Fprintf(&b, "    missing %s boot %d seq %d..%d\n", m.Device, m.Boot, m.From, m.To)
	}
	fmt.Fprintf(&b, "  duplicates         %d sent on purpose, %d resent after reconnecting", r.Duplicates.Sent, r.Duplicates.Resent)
	if r.Duplicates.SuppressedByStream != nil {
		fmt.Fprintf(&b, "; %d suppressed by JetStream", *r.Duplicates.SuppressedByStream)
	}
	fmt.Fprintf(&b, "; %d rows not yet merged in ClickHouse (FINAL hides them)\n", r.Duplicates.UnmergedRows)
	if by := r.Duplicates.ByDevice; len(by) > 0 {
		fmt.Fprintf(&b, "    suppressed by device (%d devices):", len(by))
		for i, d := range ledger.Top(by, 10) {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %d", d, by[d])
		}
		if len(by) > 10 {
			b.WriteString(", ... (see --json)")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  behaviours         %d reboots (%d boots), %d reordered, clock skew up to %d ms, %d connections lost\n",
		r.Behaviours.Reboots, r.Behaviours.Boots, r.Behaviours.Reordered, r.Behaviours.ClockSkewMs, r.Behaviours.ConnectionsLost)
	h := r.Hostile
	fmt.Fprintf(&b, "  hostile            %d sent, %d acked, %d dead-lettered: %d as expected, %d MISCLASSIFIED, %d MISSING, %d unconfirmed\n",
		h.Sent, h.Acked, h.DeadLettered, h.AsExpected, h.Misclassified, h.Missing, h.Unconfirmed)
	for _, reason := range sortedKeys(h.ByReason) {
		l := h.ByReason[reason]
		fmt.Fprintf(&b, "    %-16s expected %6d  as expected %6d  misclassified %d  missing %d\n", reason, l.Expected, l.AsExpected, l.Misclassified, l.Missing)
	}
	for _, e := range h.Examples {
		fmt.Fprintf(&b, "    ! %s (%s): expected %s, got %q %s\n", e.Case, e.Marker, e.Expected, e.Got, e.Detail)
	}
	if len(r.RejectedReadings) > 0 {
		fmt.Fprintf(&b, "  REJECTED READINGS  %v\n", r.RejectedReadings)
	}
	fmt.Fprintf(&b, "  latency from the device's measurement (corrected for coordinated omission):\n")
	for _, hop := range hopOrder(r.Latency) {
		p := r.Latency[hop]
		fmt.Fprintf(&b, "    %-22s p50 %8.1f ms  p99 %8.1f ms  p99.9 %8.1f ms  max %8.1f ms  (%d readings)\n", hopTitle(hop), p.P50, p.P99, p.P999, p.Max, p.Count)
	}
	bl := r.Backlog
	fmt.Fprintf(&b, "  backlog at its peak: broker held %.0f publishers, ingest %.0f in flight, storage %d pending", bl.PublishersHeld, bl.IngestInflight, bl.StoragePending)
	for _, pair := range sortedKeys(bl.Replication) {
		fmt.Fprintf(&b, ", %s %d", pair, bl.Replication[pair])
	}
	fmt.Fprintf(&b, "\n  bottleneck: %s\n", r.Bottleneck)
	if p := r.Pipeline; p != nil {
		fmt.Fprintf(&b, "  pipeline process   %.2f cores, max RSS %.0f MiB (sampled over %.0f s; the bench's fleet not included)\n", p.Cores, p.MaxRSSMiB, p.SampledFor)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  PROBLEM: %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hopOrder lists hops in the order a reading takes them.
func hopOrder(m map[string]Percentiles) []string {
	rank := func(hop string) int {
		switch {
		case hop == HopAck:
			return 0
		case strings.HasPrefix(hop, HopAck+"-agent-"):
			return 1
		case hop == HopIngest:
			return 2
		case hop == HopJetStream:
			return 3
		case strings.HasPrefix(hop, "replicated-"):
			return 4
		case hop == HopFeed:
			return 5
		case hop == HopStored:
			return 6
		}
		return 7
	}
	hops := sortedKeys(m)
	sort.SliceStable(hops, func(i, j int) bool { return rank(hops[i]) < rank(hops[j]) })
	return hops
}

func hopTitle(hop string) string {
	switch {
	case hop == HopAck:
		return "-> broker PUBACK"
	case strings.HasPrefix(hop, HopAck+"-agent-"):
		return "   of agent " + strings.TrimPrefix(hop, HopAck+"-agent-")
	case hop == HopIngest:
		return "-> ingest"
	case hop == HopJetStream:
		return "-> JetStream (own)"
	case strings.HasPrefix(hop, "replicated-"):
		return "-> " + strings.TrimPrefix(hop, "replicated-") + " (copy)"
	case hop == HopFeed:
		return "-> dashboard feed"
	case hop == HopStored:
		return "-> stored"
	}
	return hop
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
