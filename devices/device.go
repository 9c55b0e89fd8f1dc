package devices

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// device is one simulated device: its identity, sensor, MQTT client and
// what it has published. The scheduler only touches owed and kick; the rest
// of the mutable state belongs to the device's goroutine (run), except the
// atomic counters that Sent reads.
type device struct {
	id, region, typ, topic string
	boot                   uint64
	sensor                 sensor
	metrics                []protocol.Metric // reused for every reading
	client                 mqtt.Client

	seq   atomic.Uint64 // last sequence number generated; 0 before the first
	acked atomic.Uint64 // readings 1 to acked are acknowledged
	owed  atomic.Int64  // readings due but not yet published
	kick  chan struct{} // capacity 1: "owed went up"

	// ring of unacknowledged readings in sequence order, oldest at head;
	// allocated on the first publish with MaxInflight slots.
	ring       []pending
	head, size int
}

// pending is a published reading not yet taken off the ring. Its payload is
// kept until it is acknowledged, to be published again if the connection
// drops first (the device's own at-least-once), and then reused for a later
// reading in the same slot.
type pending struct {
	buf   []byte
	tok   mqtt.Token // nil: to be published again once connected
	acked bool
	start time.Time // first publish
}

func newDevice(index int, region, typ string, boot uint64, seed int64) *device {
	id := fmt.Sprintf("%s-%05d", idPrefix[typ], index+1)
	return &device{
		id:     id,
		region: region,
		typ:    typ,
		topic:  protocol.Topic{Region: region, DeviceType: typ, Device: id}.String(),
		boot:   boot,
		sensor: newSensor(typ, region, seed, index),
		kick:   make(chan struct{}, 1),
	}
}

// owe adds k due readings, skips what goes beyond backlog and wakes the
// device. Only the scheduler calls it; it returns how many it skipped.
func (d *device) owe(k, backlog int64) (skipped int64) {
	if n := d.owed.Add(k); n > backlog {
		skipped = min(n-backlog, k)
		d.owed.Add(-skipped)
	}
	select {
	case d.kick <- struct{}{}:
	default: // already kicked
	}
	return skipped
}

// next generates the device's next reading, measured at now, and appends its
// v1 encoding to dst.
func (d *device) next(dst []byte, now time.Time) []byte {
	seq := d.seq.Add(1)
	d.metrics = d.sensor.read(d.metrics[:0], now)
	return protocol.AppendEncode(dst, protocol.Reading{
		Version: protocol.Version1,
		Device:  d.id,
		Boot:    d.boot,
		Seq:     seq,
		TS:      now.UnixMilli(),
		Metrics: d.metrics,
	})
}

// run publishes what the device owes, at most MaxInflight unacknowledged,
// until ctx is done or, after finish is closed, it owes nothing. Then it
// drains: for up to DrainTimeout it waits for its last PUBACKs (and after
// finish publishes what it still owes). When the connection drops it
// reconnects, as soon as it has something to publish, and publishes its
// unacknowledged readings again.
func (d *device) run(ctx context.Context, f *Fleet, finish <-chan struct{}) {
	defer f.disconnect(d)
	work := ctx        // bounds reconnecting: the run, then the drain
	stop := ctx.Done() // nil once handled
	publishing := true // false once stopped: what is owed is abandoned
	draining := false
	var deadline <-chan struct{} // the drain's end
	cancelDrain := context.CancelFunc(func() {})
	defer func() { cancelDrain() }()
	drain := func() {
		if !draining {
			draining = true
			work, cancelDrain = context.WithTimeout(context.WithoutCancel(ctx), f.cfg.DrainTimeout)
			deadline = work.Done()
		}
	}
	for {
		d.settle(f)
		if d.size > 0 || publishing && d.owed.Load() > 0 {
			if !d.client.IsConnectionOpen() {
				if err := f.connect(work, d, 0); err != nil {
					if draining {
						return // what is unacknowledged stays counted in flight
					}
					publishing = false
					stop = nil
					drain()
					continue
				}
			}
			d.republish(f)
			for publishing && d.size < f.cfg.MaxInflight && d.owed.Load() > 0 {
				d.owed.Add(-1)
				d.publish(f)
			}
		}
		if draining && d.size == 0 && (!publishing || d.owed.Load() == 0) {
			return
		}
		select {
		case <-d.kick:
		case <-d.firstUnsettled():
		case <-stop:
			stop = nil
			publishing = false
			drain()
		case <-finish:
			finish = nil
			drain()
		case <-deadline:
			return // what is unacknowledged stays counted in flight
		}
	}
}

// publish generates the next reading and hands it to the MQTT client.
func (d *device) publish(f *Fleet) {
	if d.ring == nil {
		d.ring = make([]pending, f.cfg.MaxInflight)
	}
	p := &d.ring[(d.head+d.size)%len(d.ring)]
	p.start = time.Now()
	p.buf = d.next(p.buf[:0], p.start)
	p.acked = false
	d.size++
	// Counted before publishing so that acked never exceeds sent.
	f.stats.sent.Add(1)
	p.tok = d.client.Publish(d.topic, f.cfg.QoS, false, p.buf)
}

// republish publishes again, in sequence order, the readings whose publish
// failed.
func (d *device) republish(f *Fleet) {
	for i := range d.size {
		if p := &d.ring[(d.head+i)%len(d.ring)]; p.tok == nil && !p.acked {
			f.stats.resent.Add(1)
			p.tok = d.client.Publish(d.topic, f.cfg.QoS, false, p.buf)
		}
	}
}

// settle looks at the publishes that completed: a failed one is marked to be
// published again, an acknowledged one is timed, and the acknowledged
// readings at the head of the ring are taken off it, so that the device's
// acked count always covers readings 1 to acked.
func (d *device) settle(f *Fleet) {
	for i := range d.size {
		p := &d.ring[(d.head+i)%len(d.ring)]
		if p.tok == nil || p.acked {
			continue
		}
		select {
		case <-p.tok.Done():
		default:
			continue
		}
		if err := p.tok.Error(); err != nil {
			// The MQTT client is done with the payload: a failed publish
			// is not resent by the client (no auto-reconnect), and a
			// clean session discards its store on connecting.
			f.stats.errors.Add(1)
			f.logError("publish failed; will publish again", d, err)
			p.tok = nil
			continue
		}
		lat := time.Since(p.start)
		f.stats.latency.record(lat)
		f.metrics.ackLatency.Observe(lat.Seconds())
		p.tok, p.acked = nil, true
	}
	for d.size > 0 && d.ring[d.head].acked {
		d.ring[d.head].acked = false
		d.head = (d.head + 1) % len(d.ring)
		d.size--
		d.acked.Add(1)
		f.stats.acked.Add(1)
	}
}

// firstUnsettled returns the completion channel of the oldest publish still
// awaiting its outcome, or nil (blocking forever in a select) if none.
// PUBACKs of a connection come in the order of the publishes, so waiting
// for the oldest wakes the device in time for the others.
func (d *device) firstUnsettled() <-chan struct{} {
	for i := range d.size {
		if p := &d.ring[(d.head+i)%len(d.ring)]; p.tok != nil && !p.acked {
			return p.tok.Done()
		}
	}
	return nil
}
