package devices

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// counters are the fleet-wide counts, updated by the devices.
type counters struct {
	sent     atomic.Uint64 // readings published (each once, however often resent)
	acked    atomic.Uint64 // readings acknowledged (PUBACK)
	messages atomic.Uint64 // messages of readings published: v1 readings and v2 batches
	batched  atomic.Uint64 // readings measured into a batch in hand, not yet published
	errors   atomic.Uint64 // publish attempts that failed
	resent   atomic.Uint64 // publish attempts of readings published before
	skipped  atomic.Uint64 // due readings never generated (backlog full)
	// connectionsLost counts connections that dropped mid-run (the device
	// reconnects when it next has something to publish).
	connectionsLost atomic.Uint64
	// Behaviours and chaos.
	reboots, duplicates, reordered atomic.Uint64
	hostile, hostileAcked          atomic.Uint64
	latency                        latencies
}

// Stats is a snapshot of the fleet's counters.
type Stats struct {
	Devices    int
	Connected  int
	TargetRate float64       // readings per second asked for
	Elapsed    time.Duration // since publishing began
	Sent       uint64        // readings published, each counted once
	Acked      uint64        // readings acknowledged by the broker (PUBACK)
	InFlight   uint64        // readings and hostile messages sent and not yet acknowledged
	Skipped    uint64        // due readings skipped because a device's backlog was full
	// Messages counts the messages that carried the readings of Sent: as
	// many as Sent with protocol v1, fewer with batches (Config.Batch).
	Messages uint64
	// Batched counts readings measured into partial batches and not yet
	// published (Config.Batch); none once Run has returned.
	Batched uint64
	// Errors counts publish attempts that failed, mostly because the
	// connection dropped; the device publishes such a reading again once
	// reconnected (Resent), so an error is not a loss.
	Errors, Resent uint64
	// ConnectionsLost counts dropped connections; the devices reconnect by
	// themselves and resend what was unacknowledged.
	ConnectionsLost uint64
	// Behaviours (see Config): reboots, readings published twice on
	// purpose, and pairs of readings published in swapped order.
	Reboots, Duplicates, Reordered uint64
	// Hostile messages (Config.Chaos) published, each counted once, and
	// acknowledged by the broker. They are not counted in Sent or Acked.
	Hostile, HostileAcked uint64
	// Latency from measuring a reading to its PUBACK since the start
	// (with batches, one value per reading, its wait for the batch
	// included); a hostile message's from its publish.
	AckP50, AckP99, AckMax time.Duration
}

// DeviceSent is what one device published in one boot: readings (Device,
// Boot, seq) for seq from FirstSeq to LastSeq, none when LastSeq is 0.
// Readings FirstSeq to Acked were acknowledged by the broker; Acked+1 to
// LastSeq were not (yet) when the snapshot was taken: they may or may not
// have arrived.
type DeviceSent struct {
	Device, Region, Type string
	Topic                string
	Boot                 uint64
	FirstSeq, LastSeq    uint64
	Acked                uint64
}

// PublishStart is when the fleet began publishing (after connecting its
// devices); zero before.
func (f *Fleet) PublishStart() time.Time {
	if ns := f.started.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Stats returns a snapshot of the counters.
func (f *Fleet) Stats() Stats {
	s := Stats{
		Devices:         len(f.devices),
		Connected:       f.connected(),
		TargetRate:      f.cfg.Rate,
		ConnectionsLost: f.stats.connectionsLost.Load(),
	}
	// Read acks before sent: an acknowledged reading is already counted in
	// sent, so in flight never goes negative.
	s.Acked = f.stats.acked.Load()
	s.HostileAcked = f.stats.hostileAcked.Load()
	s.Sent = f.stats.sent.Load()
	s.Messages = f.stats.messages.Load()
	s.Batched = f.stats.batched.Load()
	s.Hostile = f.stats.hostile.Load()
	s.InFlight = s.Sent - s.Acked + s.Hostile - s.HostileAcked
	s.Reboots = f.stats.reboots.Load()
	s.Duplicates = f.stats.duplicates.Load()
	s.Reordered = f.stats.reordered.Load()
	s.Errors = f.stats.errors.Load()
	s.Resent = f.stats.resent.Load()
	s.Skipped = f.stats.skipped.Load()
	if start := f.started.Load(); start != 0 {
		end := f.stopped.Load()
		if end == 0 {
			end = time.Now().UnixNano()
		}
		s.Elapsed = time.Duration(end - start)
	}
	s.AckP50, s.AckP99, s.AckMax = f.stats.latency.total()
	return s
}

// connected counts the devices whose connection is open. Asking each client
// costs a read lock per device, cheap enough for a snapshot a second even
// at 10,000 devices, and cannot drift from the truth as a counter fed by
// connection callbacks could.
func (f *Fleet) connected() int {
	n := 0
	for _, d := range f.devices {
		if d.link.client.IsConnectionOpen() {
			n++
		}
	}
	return n
}

// Sent returns, device by device in fleet order and boot by boot, what each
// device published, so that a load test can work out which readings should
// have arrived.
func (f *Fleet) Sent() []DeviceSent {
	out := make([]DeviceSent, 0, len(f.devices))
	for _, d := range f.devices {
		d.mu.Lock()
		boots := d.boots
		d.mu.Unlock()
		for _, b := range boots {
			// Acked before the sequence, as in Stats.
			acked := b.acked.Load()
			last := b.last.Load()
			first := uint64(0)
			if last > 0 {
				first = 1
			}
			out = append(out, DeviceSent{
				Device: d.id, Region: d.region, Type: d.typ, Topic: d.topic,
				Boot: b.boot, FirstSeq: first, LastSeq: last,
				Acked: acked,
			})
		}
	}
	return out
}

// DeviceInfo describes one simulated device.
type DeviceInfo struct {
	Index                int // in the whole fleet: FirstDevice and on
	Device, Region, Type string
	Topic                string
	// ClockSkew is how far the device's clock is off (Config.ClockSkew):
	// its readings' ts minus the true time of measuring.
	ClockSkew time.Duration
}

// Devices describes every device, in fleet order.
func (f *Fleet) Devices() []DeviceInfo {
	out := make([]DeviceInfo, len(f.devices))
	for i, d := range f.devices {
		out[i] = DeviceInfo{Index: d.index, Device: d.id, Region: d.region, Type: d.typ, Topic: d.topic, ClockSkew: d.skew}
	}
	return out
}

// DeviceHostile is what one device published of Config.Chaos: hostile
// messages 1 to Sent, of which 1 to Acked were acknowledged by the broker.
// Fleet.ChaosCase tells which case message n is.
type DeviceHostile struct {
	Index       int // in the whole fleet (FirstDevice and on), as in ChaosMarker
	Device      string
	Region      string
	Sent, Acked uint64
}

// Hostile returns, device by device, the hostile messages published; none
// without Config.Chaos.
func (f *Fleet) Hostile() []DeviceHostile {
	out := make([]DeviceHostile, len(f.devices))
	for i, d := range f.devices {
		acked := d.hostileAcked.Load()
		out[i] = DeviceHostile{Index: d.index, Device: d.id, Region: d.region, Sent: d.hostileSent.Load(), Acked: acked}
	}
	return out
}

// Progress writes one line to w every interval (a second when 0) until ctx
// is done or Run has returned, then a last line: rates over the interval
// (with Batch, of messages too, and the readings waiting in partial
// batches), in flight, errors, skipped, and the ack latency of the
// interval.
// Interval latencies are taken from the fleet, so run one Progress per
// Fleet.
func (f *Fleet) Progress(ctx context.Context, w io.Writer, every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev, prevAt := f.Stats(), time.Now()
	line := func() {
		now, cur := time.Now(), f.Stats()
		secs := now.Sub(prevAt).Seconds()
		p50, p99 := f.stats.latency.interval()
		batches := ""
		if f.cfg.Batch > 1 {
			batches = fmt.Sprintf("  in %.0f messages/s  batched %d", float64(cur.Messages-prev.Messages)/secs, cur.Batched)
		}
		fmt.Fprintf(w, "devices %d/%d connected  sent %.0f/s%s  acked %.0f/s  in flight %d  skipped %d  errors %d  resent %d  connections lost %d  ack p50 %v p99 %v\n",
			cur.Connected, cur.Devices,
			float64(cur.Sent+cur.Hostile-prev.Sent-prev.Hostile)/secs, batches, float64(cur.Acked+cur.HostileAcked-prev.Acked-prev.HostileAcked)/secs,
			cur.InFlight, cur.Skipped, cur.Errors, cur.Resent, cur.ConnectionsLost, roundDuration(p50), roundDuration(p99))
		prev, prevAt = cur, now
	}
	for {
		select {
		case <-ctx.Done():
			line()
			return
		case <-f.done:
			line()
			return
		case <-t.C:
			line()
		}
	}
}

// roundDuration keeps three significant digits or so for display.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// Histogram bounds: microseconds up to a minute at 2 significant digits,
// a few kilobytes each.
const (
	latencyMin    = 1
	latencyMax    = int64(time.Minute / time.Microsecond)
	latencyDigits = 2
)

// latencies records measure-to-PUBACK latencies since the start and since
// the last interval() call. A mutex is enough: a record is tens of
// nanoseconds.
type latencies struct {
	mu       sync.Mutex
	all, cur *hdrhistogram.Histogram
}

// recordSince records, for each of measured, the latency from it to end:
// one value per reading of a message.
func (l *latencies) recordSince(end time.Time, measured []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.all == nil {
		l.all = hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
		l.cur = hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
	}
	for _, m := range measured {
		us := min(max(end.Sub(m).Microseconds(), latencyMin), latencyMax)
		// In range by the clamp above, so RecordValue cannot fail.
		_ = l.all.RecordValue(us)
		_ = l.cur.RecordValue(us)
	}
}

// total returns p50, p99 and max since the start.
func (l *latencies) total() (p50, p99, maxi time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.all == nil {
		return 0, 0, 0
	}
	return usDuration(l.all.ValueAtQuantile(50)), usDuration(l.all.ValueAtQuantile(99)), usDuration(l.all.Max())
}

// interval returns p50 and p99 since the last call, and starts a new interval.
func (l *latencies) interval() (p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return 0, 0
	}
	p50, p99 = usDuration(l.cur.ValueAtQuantile(50)), usDuration(l.cur.ValueAtQuantile(99))
	l.cur.Reset()
	return p50, p99
}

func usDuration(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
