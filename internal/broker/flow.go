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
// mochi (v2.7.9) acknowledges a publish first and routes it after; a
// subscriber that already has Capabilities.MaximumInflight messages in
// flight does not get it, and the message is gone although its device had
// its PUBACK (counted in telemetry_broker_inflight_dropped_total). Ingest is
// such a subscriber whenever devices publish faster than it forwards: a
// burst of 16 devices publishing as fast as the broker acknowledged lost
// 7,896 of 160,000 readings that way. MQTT 3.1.1 has no flow control of its
// own besides TCP, so the broker makes one: held in OnPublish, a publisher's
// connection is not read, its unacknowledged messages wait in the device,
// and the simulator skips readings rather than queue them (Stats.Skipped).
//
// Policy: block, re-checking on every acknowledgement that brings a held
// subscriber back under lowWater and at least every recheck; give up (the
// message is not acknowledged, so the device sends it again) only when the
// publisher's connection closes. Between the check and mochi routing the
// message, each client can have at most one message under way, so a
// subscriber never holds more than highWater plus the connected clients
// (Config.MaxClients) in flight: below mochi's limit.
type flowHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	highWater int
	lowWater  int

	mu      sync.Mutex
	release chan struct{} // closed, and replaced, when a held subscriber drains

	waiting atomic.Int64  // publishers held right now
	held    atomic.Uint64 // publishes held back, since start
}

// recheck is how often a held publisher looks again without being woken:
// a subscriber whose session was removed never acknowledges anything.
const recheck = 250 * time.Millisecond

func newFlowHook(srv *mqtt.Server, highWater int) *flowHook {
	return &flowHook{srv: srv, highWater: highWater, lowWater: highWater * 7 / 8, release: make(chan struct{})}
}

func (h *flowHook) ID() string { return "telemetry-flow" }

func (h *flowHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnQosComplete }

// OnPublish holds cl's QoS 1 or 2 message while a subscriber it would go to
// is full; mochi acknowledges and routes it once this returns.
func (h *flowHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline || !h.full(pk.TopicName) {
		return pk, nil
	}
	h.held.Add(1)
	h.waiting.Add(1)
	defer h.waiting.Add(-1)
	for {
		h.mu.Lock()
		released := h.release
		h.mu.Unlock()
		// Looked at again under the current channel: a release between
		// the first look and now is not missed.
		if !h.full(pk.TopicName) {
			return pk, nil
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

// OnQosComplete wakes the held publishers when a subscriber's
// acknowledgement brings it under lowWater.
func (h *flowHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if h.waiting.Load() == 0 || cl.State.Inflight.Len() > h.lowWater {
		return
	}
	h.mu.Lock()
	close(h.release)
	h.release = make(chan struct{})
	h.mu.Unlock()
}

// full reports whether a QoS 1 or 2 subscriber of topic, shared or not,
// has highWater messages in flight.
func (h *flowHook) full(topic string) bool {
	subs := h.srv.Topics.Subscribers(topic)
	over := func(id string, sub packets.Subscription) bool {
		if sub.Qos == 0 {
			return false
		}
		cl, ok := h.srv.Clients.Get(id)
		return ok && cl.State.Inflight.Len() >= h.highWater
	}
	for id, sub := range subs.Subscriptions {
		if over(id, sub) {
			return true
		}
	}
	for _, group := range subs.Shared {
		for id, sub := range group {
			if over(id, sub) {
				return true
			}
		}
	}
	return false
}
