// Package ledger is the conservation account every part of the project
// keeps the same way: what devices sent, what the broker acknowledged,
// what ClickHouse stored, what was lost, and which readings exactly.
//
// Flow: it sits at the end. The bench (package bench) fills one for a load
// test, each scenario (package scenario) for its window, and the dashboard
// shows the last scenario's; all three count with the types here.
package ledger

import (
	"cmp"
	"maps"
	"slices"
)

// Counts is the conservation account of a set of readings.
type Counts struct {
	// Sent readings; Acked of them acknowledged by the broker (PUBACK):
	// the pipeline owes every acknowledged reading.
	Sent  uint64 `json:"sent"`
	Acked uint64 `json:"acked"`
	// Stored distinct readings in ClickHouse.
	Stored uint64 `json:"stored"`
	// Lost acknowledged readings not stored. Must be 0.
	Lost uint64 `json:"lost"`
	// Unconfirmed readings were sent without a PUBACK and not stored: the
	// device would send them again; they are not owed.
	Unconfirmed uint64 `json:"unconfirmed"`
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Sent += o.Sent
	c.Acked += o.Acked
	c.Stored += o.Stored
	c.Lost += o.Lost
	c.Unconfirmed += o.Unconfirmed
}

// Range is readings From to To (sequence numbers, both included) of one
// device in one boot: a run of missing readings, or a window to count.
type Range struct {
	Device string `json:"device"`
	Boot   uint64 `json:"boot"`
	From   uint64 `json:"from_seq"`
	To     uint64 `json:"to_seq"`
}

// Len is how many readings the range holds.
func (r Range) Len() uint64 {
	if r.To < r.From {
		return 0
	}
	return r.To - r.From + 1
}

// MaxMissing bounds the missing ranges a ledger lists; its counts cover
// every reading.
const MaxMissing = 20

// Gaps returns the runs of r's readings that are not among stored, the
// seqs found in storage, ascending (seqs outside r are ignored).
func Gaps(r Range, stored []uint64) []Range {
	var out []Range
	next := r.From
	for _, seq := range stored {
		if seq < next || seq > r.To {
			continue
		}
		if seq > next {
			out = append(out, Range{Device: r.Device, Boot: r.Boot, From: next, To: seq - 1})
		}
		next = seq + 1
	}
	if next <= r.To {
		out = append(out, Range{Device: r.Device, Boot: r.Boot, From: next, To: r.To})
	}
	return out
}

// Gained is what each counter of after gained since before (a counter that
// went down, its process restarted, counts as having gained nothing), keys
// that gained nothing left out:
// per-device counts of a window, from two readings of a cumulative metric.
func Gained(after, before map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - min(v, before[k]); d > 0 {
			out[k] = d
		}
	}
	return out
}

// Top is the keys of counts with the n largest counts, largest first, ties
// by key; all of them when n < 0.
func Top(counts map[string]uint64, n int) []string {
	keys := slices.Sorted(maps.Keys(counts))
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(counts[b], counts[a]) })
	if n >= 0 {
		keys = keys[:min(n, len(keys))]
	}
	return keys
}
