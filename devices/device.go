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
	metrics                []protocol.Metric // the reading being measured, reused
	link                   *link             // its MQTT connection: its own, or its gateway's

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

	// The batch in hand: readings measured and not yet published, all of
	// the current boot, seqs cur.last+1 on, with the metric names of the
	// first. With Config.Batch 1 it never outlives publishNext.
	batch      []protocol.Reading
	batchVals  []protocol.Metric // the batch's values: batch[i].Metrics are slices of it
	batchTimes []time.Time       // when each reading was measured (true time, not the skewed clock)
	batchTimer *time.Timer       // set while a batch is in hand: BatchWait after its first reading
	batchDue   bool              // the timer fired: the batch goes as soon as a ring slot is free

	// held is a message generated and held back, to be published after
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
// kept until it is acknowledged, to be published again as it is (a batch
// keeps its boundaries) if the connection drops first (the device's own
// at-least-once), and then reused for a later message in the same slot.
type pending struct {
	buf      []byte
	topic    string
	boot     *bootLog   // nil for a hostile message
	readings int        // readings the message carries; 0 for a hostile one
	tok      mqtt.Token // nil: to be published again once connected
	acked    bool
	// measured is when each reading was measured, the origin of its
	// PUBACK latency; a hostile message's one entry is when it was made.
	measured []time.Time
}

func newDevice(index int, region, typ string, boot uint64, seed int64) *device {
	return newDeviceWith("", index, region, typ, boot, seed)
}

// deviceID is the id of the fleet's device index of type typ.
func deviceID(prefix, typ string, index int) string {
	return fmt.Sprintf("%s%s-%05d", prefix, idPrefix[typ], index+1)
}

func newDeviceWith(prefix string, index int, region, typ string, boot uint64, seed int64) *device {
	return newDeviceNamed(deviceID(prefix, typ, index), index, region, typ, boot, seed)
}

// newDeviceNamed is device index of the whole fleet, whose id is id.
func newDeviceNamed(id string, index int, region, typ string, boot uint64, seed int64) *device {
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

// read measures the device's next reading at now into d.metrics.
func (d *device) read(now time.Time) { d.metrics = d.sensor.read(d.metrics[:0], now) }

// add appends d.metrics, measured at now, to the batch in hand as its next
// reading, stamped by the device's clock (skew included).
func (d *device) add(now time.Time, version int) {
	if d.batchVals == nil {
		d.batchVals = make([]protocol.Metric, 0, cap(d.batch)*len(d.metrics))
	}
	start := len(d.batchVals)
	d.batchVals = append(d.batchVals, d.metrics...)
	d.batch = append(d.batch, protocol.Reading{
		Version: version,
		Device:  d.id,
		Boot:    d.cur.boot,
		Seq:     d.cur.last.Load() + uint64(len(d.batch)) + 1,
		TS:      now.Add(d.skew).UnixMilli(),
		Metrics: d.batchVals[start:len(d.batchVals):len(d.batchVals)],
	})
	d.batchTimes = append(d.batchTimes, now)
}

// encodeBatch appends the batch in hand to dst: protocol v1 for a batch
// of one when v2 is false, else one v2 batch.
func (d *device) encodeBatch(dst []byte, v2 bool) []byte {
	if !v2 {
		return protocol.AppendEncode(dst, d.batch[0])
	}
	return protocol.AppendEncodeBatch(dst, d.batch)
}

// resetBatch empties the batch in hand, keeping its memory, and stops its
// timer (which, since Go 1.23, then delivers nothing stale).
func (d *device) resetBatch() {
	d.batch, d.batchVals, d.batchTimes = d.batch[:0], d.batchVals[:0], d.batchTimes[:0]
	d.batchDue = false
	if d.batchTimer != nil {
		d.batchTimer.Stop()
	}
}

// startBatchTimer starts the wait of a batch's first reading.
func (d *device) startBatchTimer(wait time.Duration) {
	if d.batchTimer == nil {
		d.batchTimer = time.NewTimer(wait)
		return
	}
	d.batchTimer.Reset(wait)
}

// batchTimerC is the channel the batch's wait ends on, or nil (blocking
// for ever in a select) when no batch waits.
func (d *device) batchTimerC() <-chan time.Time {
	if len(d.batch) == 0 || d.batchDue || d.batchTimer == nil {
		return nil
	}
	return d.batchTimer.C
}

// sameNames reports whether two readings have the same metric names in
// the same order, as the readings of one v2 batch must.
func sameNames(a, b []protocol.Metric) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
	}
	return true
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
// drains: for up to DrainTimeout it publishes its partial batch (and after
// finish what it still owes) and waits for its last PUBACKs. When the
// connection drops it reconnects, as soon as it has something to publish,
// and publishes its unacknowledged messages again.
func (d *device) run(ctx context.Context, f *Fleet, finish <-chan struct{}) {
	defer f.release(d.link)
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
		if d.size > 0 || len(d.batch) > 0 || publishing && d.owed.Load() > 0 {
			if !d.link.client.IsConnectionOpen() {
				if err := f.ensureConnected(work, d.link, 0); err != nil {
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
			// A partial batch goes once its first reading has waited
			// BatchWait, and when stopping: nothing measured stays
			// unsent. It needs a free slot; a PUBACK makes one.
			if len(d.batch) > 0 && (d.batchDue || draining || !publishing) && d.size < f.cfg.MaxInflight {
				d.closeBatch(f, publishing && !draining)
			}
		}
		if draining && d.size == 0 && len(d.batch) == 0 && (!publishing || d.owed.Load() == 0) {
			return
		}
		select {
		case <-d.kick:
		case <-d.firstUnsettled():
		case <-d.batchTimerC():
			d.batchDue = true
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

// publishNext takes one owed reading: a hostile message in its place
// (Chaos, drawn when no batch is in hand, so that it is a share of
// messages), or the reading, measured into the batch in hand, after a
// reboot (Reboots) that first sends the batch of the old boot. A full
// batch is published (closeBatch): with Batch 1, every reading at once.
// It needs a free ring slot and fills at most one: a batch is sent before
// the reading only when a reboot or a change of names ends it, which
// leaves the reading alone in hand, short of any batch but 1's; and with
// Batch 1 no batch is ever in hand before the reading.
func (d *device) publishNext(f *Fleet) {
	if d.ring == nil {
		d.ring = make([]pending, f.cfg.MaxInflight)
		d.batch = make([]protocol.Reading, 0, f.cfg.Batch)
	}
	d.owed.Add(-1)
	if len(d.batch) == 0 && d.chance(f.cfg.Chaos) {
		d.publishHostile(f)
		return
	}
	if d.chance(f.cfg.Reboots) {
		if len(d.batch) > 0 {
			d.closeBatch(f, true) // readings of one boot per batch
		}
		d.reboot(time.Now())
		f.stats.reboots.Add(1)
	}
	now := time.Now()
	d.read(now)
	if len(d.batch) > 0 && !sameNames(d.batch[0].Metrics, d.metrics) {
		d.closeBatch(f, true) // one list of names per batch
	}
	version := protocol.Version1
	if f.cfg.Batch > 1 {
		version = protocol.Version2
	}
	d.add(now, version)
	f.stats.batched.Add(1)
	if len(d.batch) >= f.cfg.Batch {
		d.closeBatch(f, true)
		return
	}
	if len(d.batch) == 1 {
		d.startBatchTimer(f.cfg.BatchWait)
	}
}

// closeBatch puts the batch in hand, encoded (protocol v1 with Batch 1,
// else a v2 batch), in the next free ring slot and publishes it; when
// hold allows and Reorder draws it, it is held back and published after
// the next message instead, and when Duplicates draws it, it is published
// twice.
func (d *device) closeBatch(f *Fleet, hold bool) {
	p := &d.ring[(d.head+d.size)%len(d.ring)]
	n := len(d.batch)
	p.buf = d.encodeBatch(p.buf[:0], f.cfg.Batch > 1)
	p.measured = append(p.measured[:0], d.batchTimes...)
	p.topic, p.boot, p.readings, p.acked, p.tok = d.topic, d.cur, n, false, nil
	d.size++
	// Counted before publishing so that acked never exceeds sent.
	d.cur.last.Add(uint64(n))
	f.stats.sent.Add(uint64(n))
	f.stats.batched.Add(^uint64(n - 1))
	f.stats.messages.Add(1)
	d.resetBatch()
	if hold && d.held == nil && d.chance(f.cfg.Reorder) {
		d.held = p // published after the next message
		return
	}
	d.send(f, p)
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
		d.link.client.Publish(p.topic, f.cfg.QoS, false, bytes.Clone(p.buf))
	}
}

// publishHostile puts the device's next hostile message in the next free
// ring slot and publishes it.
func (d *device) publishHostile(f *Fleet) {
	p := &d.ring[(d.head+d.size)%len(d.ring)]
	now := time.Now()
	n := d.hostileSent.Load() + 1
	p.topic, p.buf = f.chaos(p.buf[:0], d, n, now)
	p.measured = append(p.measured[:0], now)
	p.boot, p.readings, p.acked, p.tok = nil, 0, false, nil
	d.size++
	d.hostileSent.Store(n)
	f.stats.hostile.Add(1)
	d.send(f, p)
}

func (d *device) send(f *Fleet, p *pending) {
	p.tok = d.link.client.Publish(p.topic, f.cfg.QoS, false, p.buf)
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
// published again, an acknowledged one is timed (each of its readings from
// when it was measured), and the acknowledged messages at the head of the
// ring are taken off it, so that the device's acked count always covers
// readings 1 to acked.
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
			f.logError("publish failed; will publish again", d.id, err)
			p.tok = nil
			continue
		}
		ack := time.Now()
		f.stats.latency.recordSince(ack, p.measured)
		for _, m := range p.measured {
			lat := ack.Sub(m)
			f.metrics.ackLatency.Observe(lat.Seconds())
			if p.boot != nil && f.cfg.AckLatency != nil {
				f.cfg.AckLatency(lat)
			}
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
		p.boot.acked.Add(uint64(p.readings)) // one PUBACK for every reading of a batch
		f.stats.acked.Add(uint64(p.readings))
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
