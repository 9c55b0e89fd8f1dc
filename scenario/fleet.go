package scenario

import (
	"context"
	"fmt"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
)

// Tally counts one set of devices in a ledger: the pipeline's own fleet,
// or the witnesses.
type Tally struct {
	Devices int `json:"devices"`
	// Boots are the (device, boot) pairs with readings counted.
	Boots int `json:"boots"`
	ledger.Counts
}

// String is the tally in one line.
func (t Tally) String() string {
	s := fmt.Sprintf("sent %d, acknowledged %d, stored %d, lost %d", t.Sent, t.Acked, t.Stored, t.Lost)
	if t.Unconfirmed > 0 {
		s += fmt.Sprintf(", unconfirmed %d", t.Unconfirmed)
	}
	return s
}

// window is what one device published in one boot during a scenario's
// window: the readings of the range, of which From to acked were
// acknowledged by the broker (none when acked < From).
type window struct {
	ledger.Range
	acked uint64
}

func (w window) ackedLen() uint64 { return ledger.Range{From: w.From, To: w.acked}.Len() }

type deviceBoot struct {
	device string
	boot   uint64
}

// windows works out, from two records of a fleet's progress
// (devices.Fleet.Sent) taken at a scenario's start and at its end, the
// readings each device published in between, boot by boot: seq from the
// start's LastSeq+1 to the end's LastSeq. A boot that only the end has
// began in between (a reboot), so its readings start at seq 1. What the
// broker acknowledged of them is read from settled, a later record (after
// the drain), since readings in flight at the end are acknowledged after
// it; a boot settled lacks keeps the end's acknowledgements. Acked is a
// device's count from its first reading of the boot, so acknowledgements
// of readings sent before the start are not counted. Boots with no reading
// in the window are left out.
func windows(start, end, settled []devices.DeviceSent) []window {
	before := make(map[deviceBoot]uint64, len(start))
	for _, s := range start {
		before[deviceBoot{s.Device, s.Boot}] = s.LastSeq
	}
	acked := make(map[deviceBoot]uint64, len(settled))
	for _, s := range settled {
		acked[deviceBoot{s.Device, s.Boot}] = s.Acked
	}
	var out []window
	for _, e := range end {
		k := deviceBoot{e.Device, e.Boot}
		r := ledger.Range{Device: e.Device, Boot: e.Boot, From: before[k] + 1, To: e.LastSeq}
		if r.Len() == 0 {
			continue
		}
		a, ok := acked[k]
		if !ok {
			a = e.Acked
		}
		out = append(out, window{Range: r, acked: max(min(a, r.To), r.From-1)})
	}
	return out
}

// fleetCount is the ledger of the pipeline's own devices over one
// scenario's window.
type fleetCount struct {
	Tally
	reboots uint64         // boots begun within the window
	missing []ledger.Range // every run of readings not stored
	drain   time.Duration
}

// drainPoll is how often the drain asks ClickHouse.
const drainPoll = 500 * time.Millisecond

// countFleet waits until every reading the fleet published between start
// and end is stored and its PUBACK has reached the device (storage can be
// quicker than the device's own bookkeeping), or until neither count has
// moved for the drain timeout (ClickHouse not answering counts as not
// moving), then counts them. ClickHouse is asked once per poll, and once
// more at the end for the stored seqs of the ranges not wholly stored: per
// run, never per reading.
func (r *Runner) countFleet(ctx context.Context, start, end []devices.DeviceSent) (fleetCount, error) {
	began := time.Now()
	ranges := windows(start, end, end)
	fc := fleetCount{}
	seen := map[string]bool{}
	for _, e := range end {
		seen[e.Device] = true
	}
	fc.Devices = len(seen)
	fc.Boots = len(ranges)
	have := make(map[deviceBoot]bool, len(start))
	for _, s := range start {
		have[deviceBoot{s.Device, s.Boot}] = true
	}
	keys := make([]ledger.Range, len(ranges))
	for i, w := range ranges {
		keys[i] = w.Range
		fc.Sent += w.Len()
		if !have[deviceBoot{w.Device, w.Boot}] {
			fc.reboots++
		}
	}
	if len(keys) == 0 {
		return fc, nil
	}

	poll := r.cfg.poll
	if poll == 0 {
		poll = drainPoll
	}
	var stored []uint64
	var ws []window
	lastStored, lastAcked, progressed := uint64(0), uint64(0), time.Now()
	for {
		settled, _ := r.target.Fleet()
		ws = windows(start, end, settled)
		var acked uint64
		for _, w := range ws {
			acked += w.ackedLen()
		}
		got, err := r.target.Stored(ctx, keys)
		if err == nil && len(got) != len(keys) {
			err = fmt.Errorf("%d counts for %d ranges", len(got), len(keys))
		}
		var total uint64
		if err == nil {
			stored = got
			for i, n := range got {
				total += min(n, keys[i].Len())
			}
		}
		if total > lastStored || acked > lastAcked {
			lastStored, lastAcked, progressed = max(total, lastStored), max(acked, lastAcked), time.Now()
		}
		if err == nil && total == fc.Sent && acked == fc.Sent {
			break
		}
		if time.Since(progressed) > r.cfg.DrainTimeout {
			if stored == nil {
				return fc, fmt.Errorf("reading ClickHouse: %w", err)
			}
			break
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fc, fmt.Errorf("interrupted while waiting for the pipeline to drain: %w", ctx.Err())
		case <-t.C:
		}
	}
	fc.drain = time.Since(began)

	// ws and keys are in the same order: both follow end.
	acked := make(map[deviceBoot]uint64, len(ws))
	for _, w := range ws {
		fc.Acked += w.ackedLen()
		acked[deviceBoot{w.Device, w.Boot}] = w.acked
	}
	var short []ledger.Range
	for i, k := range keys {
		if stored[i] < k.Len() {
			short = append(short, k)
		} else {
			fc.Stored += k.Len()
		}
	}
	if len(short) == 0 {
		return fc, nil
	}
	// Stored again from the seqs, which may have grown since the count:
	// stored, lost and unconfirmed then add up to sent.
	seqs, err := r.target.StoredSeqs(ctx, short)
	if err == nil && len(seqs) != len(short) {
		err = fmt.Errorf("%d lists of seqs for %d ranges", len(seqs), len(short))
	}
	if err != nil {
		return fc, fmt.Errorf("listing what is missing: %w", err)
	}
	for i, k := range short {
		a := acked[deviceBoot{k.Device, k.Boot}]
		fc.Stored += k.Len()
		for _, g := range ledger.Gaps(k, seqs[i]) {
			owed := ledger.Range{From: g.From, To: min(g.To, a)}.Len()
			fc.Stored -= g.Len()
			fc.Lost += owed
			fc.Unconfirmed += g.Len() - owed
			fc.missing = append(fc.missing, g)
		}
	}
	return fc, nil
}
