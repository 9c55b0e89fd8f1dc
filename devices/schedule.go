package devices

import (
	"context"
	"math"
	"time"
)

// dueBy returns how many readings are due in total elapsed after the start
// at rate readings per second, capped at limit. Computing the total from the
// start, rather than adding per tick, keeps the rate exact however late the
// ticks come: a late tick hands out more.
func dueBy(rate float64, elapsed time.Duration, limit uint64) uint64 {
	if elapsed <= 0 {
		return 0
	}
	// rate*ns first: exact for whole rates, so 100/s after 10ms is 1, not
	// 0.9999. The epsilon absorbs the rounding of fractional rates.
	due := math.Floor(rate*float64(elapsed)/float64(time.Second) + 1e-9)
	if due >= float64(limit) {
		return limit
	}
	return uint64(due)
}

// totalFor returns how many readings a run of duration at rate publishes in
// all; no limit when duration is 0.
func totalFor(rate float64, duration time.Duration) uint64 {
	if duration <= 0 {
		return math.MaxUint64
	}
	return dueBy(rate, duration, math.MaxUint64)
}

// rampedElapsed is the elapsed time at the full rate equivalent to elapsed
// with a ramp-up: the rate rises linearly from 0 to full over the first
// ramp, so that until then readings fall due as t²/2ramp, after it as
// t - ramp/2.
func rampedElapsed(elapsed, ramp time.Duration) time.Duration {
	switch {
	case ramp <= 0 || elapsed <= 0:
		return elapsed
	case elapsed < ramp:
		e := float64(elapsed)
		return time.Duration(e * e / (2 * float64(ramp)))
	default:
		return elapsed - ramp/2
	}
}

// spread hands n readings out round-robin over devices (numbered 0 to
// devices-1), starting at cursor: give is called once for each device that
// gets any, with how many, in round-robin order from cursor. It returns
// the cursor for the next call. Work is O(min(n, devices)), not O(n).
func spread(n uint64, cursor, devices int, give func(device int, k uint64)) int {
	if n == 0 || devices <= 0 {
		return cursor
	}
	per := n / uint64(devices)
	extra := int(n % uint64(devices))
	if per == 0 {
		for j := range extra {
			give((cursor+j)%devices, 1)
		}
		return (cursor + extra) % devices
	}
	for j := range devices {
		k := per
		if j < extra {
			k++
		}
		give((cursor+j)%devices, k)
	}
	return (cursor + extra) % devices
}

// schedule hands out due readings to the devices every tick until ctx is
// done or, with a Duration, every reading has been handed out; it then
// closes finished (only in the latter case) and returns.
func (f *Fleet) schedule(ctx context.Context, finished chan<- struct{}) {
	limit := totalFor(f.cfg.Rate, rampedElapsed(f.cfg.Duration, f.cfg.RampUp))
	ticker := time.NewTicker(f.cfg.Tick)
	defer ticker.Stop()
	start := time.Now()
	f.started.Store(start.UnixNano())
	var issued uint64
	cursor := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		due := dueBy(f.cfg.Rate, rampedElapsed(time.Since(start), f.cfg.RampUp), limit)
		cursor = spread(due-issued, cursor, len(f.devices), f.owe)
		issued = due
		if issued >= limit {
			close(finished)
			return
		}
	}
}

// owe tells device i that k more readings are due, skipping what exceeds its
// backlog (policy "wait, then skip").
func (f *Fleet) owe(i int, k uint64) {
	d := f.devices[i]
	if skipped := d.owe(int64(k), int64(f.cfg.MaxBacklog)); skipped > 0 {
		f.stats.skipped.Add(uint64(skipped))
	}
}
