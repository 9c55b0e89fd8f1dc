package devices

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// device is one simulated device: its identity, sensor, MQTT client and
// what it has published. The scheduler only touches owed and kick; the rest
// of the mutable state belongs to the device's goroutine (run), except the
// atomic counters and the boot history that Sent reads.
type device struct {
	index                  int
	id, region, typ, topic string
	user                   string // its MQTT user name (internal/devicecred)
	sensor                 sensor
	metrics                []protocol.Metric // reused for every reading
	client                 mqtt.Client

	// rng draws the behaviours (reboots, duplicates, reordering, chaos),
	// apart from the sensor's randomness so that turning a behaviour on
	// does not change the readings' values.
	rng  *rand.Rand
	skew time.Duration // the device clock's fixed offset

	mu    sync.Mutex // guards boots' slice; the entries are atomic
	boots []*bootLog // every boot of the device, oldest first
	cur   *bootLog   // the current boot, last of boots; only run changes it

	hostileSent  atomic.Uint64 // hostile messages 1 to hostileSent generated
	hostileAcked atomic.Uint64 // hostile messages 1 to hostileAcked acknowledged

	owed atomic.Int64  // readings due but not yet published
	kick chan struct{} // capacity 1: "owed went up"

	// held is a reading generated and held back, to be published after
	// the next (Reorder), or when the device stops; nil if none.
	held *pending

	// ring of unacknowledged messages in the order generated, oldest at
	// head; allocated on the first publish with MaxInflight slots.
	ring       []pending
	head, size int
}

// bootLog is what a device published in one boot: readings 1 to last, of
// which 1 to acked are acknowledged.
type bootLog struct {
	boot        uint64
	last, acked atomic.Uint64
}

// pending is a published message not yet taken off the ring. Its payload is
// kept until it is acknowledged, to be published again if the connection
// drops first (the device's own at-least-once), and then reused for a later
// message in the same slot.
type pending struct {
	buf   []byte
	topic string
	boot  *bootLog   // nil for a hostile message
	tok   mqtt.Token // nil: to be published again once connected
	acked bool
	start time.Time // first publish
}

func newDevice(index int, region, typ string, boot uint64, seed int64) *device {
	return newDeviceWith("", index, region, typ, boot, seed)
}

// deviceID is the id of the fleet's device index of type typ.
func deviceID(prefix, typ string, index int) string {
	return fmt.Sprintf("%s%s-%05d", prefix, idPrefix[typ], index+1)
}

func newDeviceWith(prefix string, index int, region, typ string, boot uint64, seed int64) *device {
	id := deviceID(prefix, typ, index)
	b := &bootLog{boot: boot}
	return &device{
		index:  index,
		id:     id,
		region: region,
		typ:    typ,
		topic:  protocol.Topic{Region: region, DeviceType: typ, Device: id}.String(),
		user:   devicecred.Username(region, typ, id),
		sensor: newSensor(typ, region, seed, index),
		// A stream of its own, apart from the sensor's (which uses index
		// as its stream number).
		rng:   rand.New(rand.NewPCG(uint64(seed)^behaviourSeed, uint64(index))),
		boots: []*bootLog{b},
		cur:   b,
		kick:  make(chan struct{}, 1),
	}
}

// behaviourSeed tells the behaviours' random stream from the sensor's.
const behaviourSeed = 0x9e3779b97f4a7c15

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

// next generates the device's next reading, measured at now (by the
// device's clock, skew included), and appends its v1 encoding to dst.
func (d *device) next(dst []byte, now time.Time) []byte {
	seq := d.cur.last.Add(1)
	d.metrics = d.sensor.read(d.metrics[:0], now)
	return protocol.AppendEncode(dst, protocol.Reading{
		Version: protocol.Version1,
		Device:  d.id,
		Boot:    d.cur.boot,
		Seq:     seq,
		TS:      now.Add(d.skew).UnixMilli(),
		Metrics: d.metrics,
	})
}

// reboot starts a new boot: seq from 1 again. The new boot is above the
// last and, when the boot counts seconds, not below the current time, so a
// restarted simulator does not reuse a boot of an earlier run.
func (d *device) reboot(now time.Time) {
	b := &bootLog{boot: max(d.cur.boot+1, uint64(now.Unix()))}
	d.mu.Lock()
	d.boots = append(d.boots, b)
	d.mu.Unlock()
	d.cur = b
}

// chance draws whether a behaviour of probability p happens now.
func (d *device) chance(p float64) bool { return p > 0 && d.rng.Float64() < p }

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
			if d.held != nil && (draining || !publishing) {
				d.send(f, d.held) // no next reading to swap it with
				d.held = nil
			}
			for publishing && d.size < f.cfg.MaxInflight && d.owed.Load() > 0 {
				d.publishNext(f)
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

// publishNext publishes what the device owes next: a hostile message
// (Chaos), or a reading, after a reboot (Reboots), followed by a duplicate
// (Duplicates), or swapped with the one after it (Reorder). It takes one
// owed reading.
func (d *device) publishNext(f *Fleet) {
	if d.ring == nil {
		d.ring = make([]pending, f.cfg.MaxInflight)
	}
	d.owed.Add(-1)
	if d.chance(f.cfg.Chaos) {
		d.publishHostile(f)
		return
	}
	if d.chance(f.cfg.Reboots) {
		d.reboot(time.Now())
		f.stats.reboots.Add(1)
	}
	first := d.generate(f)
	if d.held == nil && d.chance(f.cfg.Reorder) {
		d.held = first // published after the next reading
		return
	}
	d.send(f, first)
	if d.held != nil {
		d.send(f, d.held)
		d.held = nil
		f.stats.reordered.Add(1)
	}
	if d.chance(f.cfg.Duplicates) {
		// A copy: the client writes the payload later, and the ring slot
		// may be reused before the duplicate goes out. Its outcome is not
		// tracked; the original's is.
		f.stats.duplicates.Add(1)
		d.client.Publish(first.topic, f.cfg.QoS, false, bytes.Clone(first.buf))
	}
}

// generate puts the next reading in the next free ring slot.
func (d *device) generate(f *Fleet) *pending {
	p := &d.ring[(d.head+d.size)%len(d.ring)]
	p.start = time.Now()
	p.buf = d.next(p.buf[:0], p.start)
	p.topic, p.boot, p.acked, p.tok = d.topic, d.cur, false, nil
	d.size++
	// Counted before publishing so that acked never exceeds sent.
	f.stats.sent.Add(1)
	return p
}

// publishHostile puts the device's next hostile message in the next free
// ring slot and publishes it.
func (d *device) publishHostile(f *Fleet) {
	p := &d.ring[(d.head+d.size)%len(d.ring)]
	p.start = time.Now()
	n := d.hostileSent.Load() + 1
	p.topic, p.buf = f.chaos(p.buf[:0], d, n, p.start)
	p.boot, p.acked, p.tok = nil, false, nil
	d.size++
	d.hostileSent.Store(n)
	f.stats.hostile.Add(1)
	d.send(f, p)
}

func (d *device) send(f *Fleet, p *pending) {
	p.tok = d.client.Publish(p.topic, f.cfg.QoS, false, p.buf)
}

// republish publishes again, in the order generated, the messages whose
// publish failed.
func (d *device) republish(f *Fleet) {
	for i := range d.size {
		if p := &d.ring[(d.head+i)%len(d.ring)]; p.tok == nil && !p.acked && p != d.held {
			f.stats.resent.Add(1)
			d.send(f, p)
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
		if p.boot != nil && f.cfg.AckLatency != nil {
			f.cfg.AckLatency(lat)
		}
		p.tok, p.acked = nil, true
	}
	for d.size > 0 && d.ring[d.head].acked {
		p := &d.ring[d.head]
		p.acked = false
		d.head = (d.head + 1) % len(d.ring)
		d.size--
		if p.boot == nil {
			d.hostileAcked.Add(1)
			f.stats.hostileAcked.Add(1)
			continue
		}
		p.boot.acked.Add(1)
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
