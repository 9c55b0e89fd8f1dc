package broker

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// flowHook is the embedded broker's backpressure: it holds a publisher back,
// before mochi acknowledges its QoS 1 message, while a QoS 1 subscriber the
// message would go to has highWater messages in flight.
//
// mochi (v2.7.9) acknowledges a publish first and routes it after. A
// subscriber that has Capabilities.MaximumInflight messages in flight, or
// a full outbound queue (Capabilities.MaximumClientWritesPending), does not
// get it, and the message is gone although its device had its PUBACK
// (counted in telemetry_broker_inflight_dropped_total and
// telemetry_broker_messages_dropped_total). Ingest is such a subscriber
// whenever devices publish faster than it forwards: a burst of 16 devices
// publishing as fast as the broker acknowledged lost 7,896 of 160,000
// readings that way. MQTT 3.1.1 has no flow control of its own besides TCP,
// so the broker makes one: held in OnPublish, a publisher's connection is
// not read, its unacknowledged messages wait in the device, and the
// simulator skips readings rather than queue them (Stats.Skipped).
//
// Policy: block, re-checking on every acknowledgement that brings a held
// subscriber back under lowWater and at least every recheck; give up (the
// message is not acknowledged, so the device sends it again) only when the
// publisher's connection closes. A message admitted is reserved against
// each subscriber until mochi has routed it (OnPublished) or its publisher
// is gone (OnDisconnect), so that publishers admitted at the same moment
// cannot overshoot: a subscriber never has more than highWater messages
// in flight and queued, well below mochi's limits.
type flowHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	highWater int
	lowWater  int

	mu       sync.Mutex
	reserved map[string]int            // by subscriber id: admitted, not routed yet
	holding  map[*mqtt.Client][]string // by publisher: whom its admitted message reserved
	release  chan struct{}             // closed, and replaced, when a held subscriber drains

	waiting atomic.Int64  // publishers held right now
	held    atomic.Uint64 // publishes held back, since start
}

// recheck is how often a held publisher looks again without being woken:
// a subscriber whose session was removed never acknowledges anything.
const recheck = 250 * time.Millisecond

func newFlowHook(srv *mqtt.Server, highWater int) *flowHook {
	return &flowHook{srv: srv, highWater: highWater, lowWater: highWater * 3 / 4,
		reserved: map[string]int{}, holding: map[*mqtt.Client][]string{}, release: make(chan struct{})}
}

func (h *flowHook) ID() string { return "telemetry-flow" }

func (h *flowHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPublished || b == mqtt.OnDisconnect || b == mqtt.OnQosComplete
}

// OnPublish admits cl's QoS 1 or 2 message once every subscriber it goes to
// has room, and reserves that room; mochi acknowledges and routes the
// message once this returns.
func (h *flowHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	counted := false
	for {
		subs := h.subscribers(pk.TopicName)
		h.mu.Lock()
		if h.room(subs) {
			ids := make([]string, len(subs))
			for i, s := range subs {
				ids[i] = s.ID
				h.reserved[s.ID]++
			}
			h.holding[cl] = ids
			h.mu.Unlock()
			return pk, nil
		}
		released := h.release
		h.mu.Unlock()
		if !counted {
			counted = true
			h.held.Add(1)
			h.waiting.Add(1)
			defer h.waiting.Add(-1)
		}
		if cl.Closed() {
			// Not acknowledged: the device still holds it.
			return pk, packets.ErrRejectPacket
		}
		select {
		case <-released:
		case <-time.After(recheck):
		}
	}
}

// OnPublished: mochi has routed cl's message; it counts in its
// subscribers' in-flight messages now, no longer as reserved.
func (h *flowHook) OnPublished(cl *mqtt.Client, pk packets.Packet) { h.unreserve(cl) }

// OnDisconnect: a publisher gone between admission and routing (its
// PUBACK could not be written) leaves no reservation behind.
func (h *flowHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) { h.unreserve(cl) }

func (h *flowHook) unreserve(cl *mqtt.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids, ok := h.holding[cl]
	if !ok {
		return
	}
	delete(h.holding, cl)
	for _, id := range ids {
		if h.reserved[id]--; h.reserved[id] <= 0 {
			delete(h.reserved, id)
		}
	}
}

// OnQosComplete wakes the held publishers when a subscriber's
// acknowledgement brings it under lowWater.
func (h *flowHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if h.waiting.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cl.State.Inflight.Len()+h.reserved[cl.ID] > h.lowWater {
		return
	}
	close(h.release)
	h.release = make(chan struct{})
}

// room reports whether each of subs can take one more message. h.mu held.
func (h *flowHook) room(subs []*mqtt.Client) bool {
	for _, s := range subs {
		if s.State.Inflight.Len()+h.reserved[s.ID] >= h.highWater {
			return false
		}
	}
	return true
}

// subscribers are the clients with a QoS 1 or 2 subscription, shared or
// not, that a message on topic goes to.
func (h *flowHook) subscribers(topic string) []*mqtt.Client {
	subs := h.srv.Topics.Subscribers(topic)
	var out []*mqtt.Client
	add := func(id string, sub packets.Subscription) {
		if sub.Qos == 0 {
			return
		}
		if cl, ok := h.srv.Clients.Get(id); ok {
			out = append(out, cl)
		}
	}
	for id, sub := range subs.Subscriptions {
		add(id, sub)
	}
	for _, group := range subs.Shared {
		for id, sub := range group {
			add(id, sub)
		}
	}
	return out
}
