package broker

import (
	"strings"
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
// Policy: block. A held publisher waits in the queue of the subscriber it
// waits for, first come first served; acknowledgements that bring that
// subscriber back under lowWater wake as many as it has room for. It looks
// again at least every recheck, and gives up (the message is not
// acknowledged, so the device sends it again) only when its own connection
// closes. A message admitted is reserved against each subscriber until
// mochi has routed it (OnPublished) or its publisher is gone
// (OnDisconnect), so that publishers admitted at the same moment cannot
// overshoot: a subscriber never has more than highWater messages in flight
// and queued, well below mochi's limits.
type flowHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	highWater int
	lowWater  int

	mu sync.Mutex
	// filters are the QoS 1 and 2 subscriptions by client id, shares
	// stripped of their $share/<group>/ prefix: the few subscribers
	// (ingest) a publish may have to wait for, kept by the subscription
	// hooks so that a publish needs no walk of mochi's topic tree (which
	// copies every shared subscription of the topic each time).
	filters map[string]map[string]bool
	// byTopic caches which of them each topic goes to; emptied when a
	// subscription changes. Bounded by the topics, one per device.
	byTopic  map[string][]string
	reserved map[string]int             // by subscriber id: admitted, not routed yet
	holding  map[*mqtt.Client][]string  // by publisher: whom its admitted message reserved
	queues   map[string][]chan struct{} // by subscriber id: the publishers held for it, in order

	waiting atomic.Int64  // publishers held right now
	held    atomic.Uint64 // publishes held back, since start
}

// recheck is how often a held publisher looks again without being woken:
// a subscriber whose session was removed never acknowledges anything.
const recheck = 250 * time.Millisecond

func newFlowHook(srv *mqtt.Server, highWater int) *flowHook {
	return &flowHook{srv: srv, highWater: highWater, lowWater: highWater * 3 / 4,
		filters: map[string]map[string]bool{}, byTopic: map[string][]string{}, reserved: map[string]int{},
		holding: map[*mqtt.Client][]string{}, queues: map[string][]chan struct{}{}}
}

func (h *flowHook) ID() string { return "telemetry-flow" }

func (h *flowHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPublished || b == mqtt.OnDisconnect || b == mqtt.OnQosComplete ||
		b == mqtt.OnSubscribed || b == mqtt.OnUnsubscribed
}

// OnSubscribed notes cl's subscriptions granted at QoS 1 or 2; one granted
// at QoS 0 replaces the one before and is forgotten. A refused filter
// changes nothing: mochi leaves the session's subscription as it was. That
// matters on a resumed session: mochi (v2.7.9) keeps the client's packet
// ids and its own in one map (mochi-mqtt/server#545), so a SUBSCRIBE whose
// id equals one of the messages still in flight to the client is refused
// with 0x91, while the session keeps its subscription and gets messages.
// Forgetting it then turned backpressure off for that subscriber.
func (h *flowHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, sub := range pk.Filters {
		if i >= len(codes) {
			break
		}
		f := unshared(sub.Filter)
		switch codes[i] {
		case 1, 2:
			if h.filters[cl.ID] == nil {
				h.filters[cl.ID] = map[string]bool{}
			}
			h.filters[cl.ID][f] = true
		case 0:
			h.forget(cl.ID, f)
		}
	}
	clear(h.byTopic)
}

// OnUnsubscribed forgets cl's subscriptions.
func (h *flowHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sub := range pk.Filters {
		h.forget(cl.ID, unshared(sub.Filter))
	}
	clear(h.byTopic)
}

// forget drops one of id's filters. h.mu held.
func (h *flowHook) forget(id, filter string) {
	delete(h.filters[id], filter)
	if len(h.filters[id]) == 0 {
		delete(h.filters, id)
	}
}

// OnPublish admits cl's QoS 1 or 2 message once every subscriber it goes to
// has room, and reserves that room; mochi acknowledges and routes the
// message once this returns.
func (h *flowHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	var timer *time.Timer
	for {
		h.mu.Lock()
		ids := h.subscribers(pk.TopicName)
		full := h.full(ids)
		if full == "" {
			for _, id := range ids {
				h.reserved[id]++
			}
			h.holding[cl] = ids
			h.mu.Unlock()
			return pk, nil
		}
		wake := make(chan struct{}, 1)
		h.queues[full] = append(h.queues[full], wake)
		h.mu.Unlock()
		if timer == nil {
			h.held.Add(1)
			h.waiting.Add(1)
			defer h.waiting.Add(-1)
			timer = time.NewTimer(recheck)
			defer timer.Stop()
		} else {
			timer.Reset(recheck)
		}
		if cl.Closed() {
			h.leave(full, wake)
			// Not acknowledged: the device still holds it.
			return pk, packets.ErrRejectPacket
		}
		select {
		case <-wake:
		case <-timer.C:
			h.leave(full, wake)
		}
	}
}

// leave takes a publisher that stopped waiting out of id's queue.
func (h *flowHook) leave(id string, wake chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[id]
	for i, c := range q {
		if c == wake {
			h.queues[id] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(h.queues[id]) == 0 {
		delete(h.queues, id)
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

// OnQosComplete: once cl, a subscriber others wait for, is back under
// lowWater, wake as many of them, in order, as it has room for.
func (h *flowHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if h.waiting.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[cl.ID]
	if len(q) == 0 {
		return
	}
	used := cl.State.Inflight.Len() + h.reserved[cl.ID]
	if used > h.lowWater {
		return
	}
	n := min(h.highWater-used, len(q))
	for _, wake := range q[:n] {
		wake <- struct{}{} // buffered, and sent once
	}
	h.queues[cl.ID] = q[n:]
	if len(h.queues[cl.ID]) == 0 {
		delete(h.queues, cl.ID)
	}
}

// full returns the first of ids (subscriber client ids) that has no room
// for one more message, "" when all have. A session being taken over has
// none: mochi has cleared the old client's messages in flight and not yet
// registered the new one, so its count says nothing. h.mu held.
func (h *flowHook) full(ids []string) string {
	for _, id := range ids {
		cl, ok := h.srv.Clients.Get(id)
		if ok && (cl.IsTakenOver() || cl.State.Inflight.Len()+h.reserved[id] >= h.highWater) {
			return id
		}
	}
	return ""
}

// subscribers are the ids of the clients with a QoS 1 or 2 subscription,
// shared or not, that a message on topic goes to. h.mu held.
func (h *flowHook) subscribers(topic string) []string {
	if ids, ok := h.byTopic[topic]; ok {
		return ids
	}
	ids := []string{}
	for id, filters := range h.filters {
		for f := range filters {
			if matches(f, topic) {
				ids = append(ids, id)
				break
			}
		}
	}
	h.byTopic[topic] = ids
	return ids
}

// unshared is a subscription filter without its $share/<group>/ prefix.
func unshared(filter string) string {
	if !mqtt.IsSharedFilter(filter) {
		return filter
	}
	if _, rest, ok := strings.Cut(filter, "/"); ok { // $share
		if _, f, ok := strings.Cut(rest, "/"); ok { // group
			return f
		}
	}
	return filter
}

// matches reports whether a topic filter matches topic: + is one level, #
// the rest; a topic starting with $ is matched by no wildcard at its
// first level [MQTT-4.7.2-1].
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too [MQTT-4.7.1-2].
			return fmore == tmore || fmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}
