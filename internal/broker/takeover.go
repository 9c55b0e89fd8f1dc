package broker

import (
	"bytes"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takeoverHook keeps the QoS 1 messages that mochi (v2.7.9) loses while a
// client resumes its persistent session: ingest's restart after a crash.
//
// mochi resumes a session by copying the old client's in-flight messages
// to the new client, moving the subscriptions, clearing the old client's
// in-flight messages, and only then registering the new client under the
// client id. A message routed in between goes to the old client (the one
// registered under the id): into its in-flight set, after the copy. It is
// then cleared with the rest, or stays with the old client for good, and is
// never delivered, although its publisher has had its PUBACK. Measured: one
// reading in six crash-and-restart runs of ingest under the demo's load,
// found by the scenario's ledger.
//
// The hook remembers the old client when a session is resumed, collects
// what mochi drops from it, and once the new client is registered hands
// every dropped or stranded message the new client does not hold to the new
// client. A message that was in fact delivered already is then delivered
// twice, which ingest collapses (its Nats-Msg-Id).
type takeoverHook struct {
	mqtt.HookBase
	srv *mqtt.Server

	mu      sync.Mutex
	resumes map[*mqtt.Client]*resume // by the client being replaced, while a takeover is under way

	redelivered atomic.Uint64
}

// resume is one takeover under way: the client being replaced, the one
// replacing it, and what mochi dropped from the old one. Takeovers of one
// client id may overlap (a client reconnecting again before mochi has
// finished resuming its session), so each is kept on its own.
type resume struct {
	old, new *mqtt.Client
	dropped  []packets.Packet
	// earlier is a takeover of old's own that never finished (mochi stops
	// without OnSessionEstablished when resending the session fails, as
	// when old was taken over in turn): what it collected is for new now.
	earlier []*resume
}

func newTakeoverHook(srv *mqtt.Server) *takeoverHook {
	return &takeoverHook{srv: srv, resumes: map[*mqtt.Client]*resume{}}
}

func (h *takeoverHook) ID() string { return "telemetry-takeover" }

func (h *takeoverHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnQosDropped || b == mqtt.OnSessionEstablished || b == mqtt.OnQosPublish
}

// OnSessionEstablish runs right before mochi resumes or replaces the
// session of cl's client id.
func (h *takeoverHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok || old == cl || pk.Connect.Clean {
		return
	}
	r := &resume{old: old, new: cl}
	h.mu.Lock()
	for o, x := range h.resumes {
		if x.new == old {
			r.earlier = append(r.earlier, x)
			delete(h.resumes, o)
		}
	}
	// Two logins resuming from the same client at once (the first not yet
	// registered when the second looks the id up): the second takes over
	// what the first collected rather than replacing it.
	if x, ok := h.resumes[old]; ok {
		r.earlier = append(r.earlier, x)
	}
	h.resumes[old] = r
	h.mu.Unlock()
}

// OnQosDropped collects the messages mochi drops from a client being
// replaced.
func (h *takeoverHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.resumes[cl]; ok {
		r.dropped = append(r.dropped, pk)
	}
}

// OnSessionEstablished runs once the new client is registered, has its
// CONNACK and has been sent the in-flight messages mochi copied: from now
// on messages are routed to it, and what the old client lost is handed
// over.
func (h *takeoverHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	var r *resume
	for old, x := range h.resumes {
		if x.new == cl {
			r = x
			delete(h.resumes, old)
		}
	}
	if r == nil {
		h.mu.Unlock()
		return
	}
	// Collected under the lock, together with taking r out of resumes: a
	// hand-over to r's old client checks for a pending resume (place).
	dropped := r.collect(nil)
	// The client now registered under the id: cl, or one that has taken
	// over from it meanwhile (whose own takeover then hands on what it got).
	to, ok := h.srv.Clients.Get(cl.ID)
	if !ok {
		to = cl
	}
	var sends []handover
	for _, pk := range dropped {
		if !holds(to, pk) { // else copied with the session: mochi resent it
			sends = h.place(to, pk, sends)
		}
	}
	h.mu.Unlock()
	h.send(sends)
}

// collect appends to dst what r's old client was dropped and what reached it
// after mochi cleared it (which stays there), and the same of the earlier
// takeovers r stands for.
func (r *resume) collect(dst []packets.Packet) []packets.Packet {
	dst = append(dst, r.dropped...)
	for _, pk := range r.old.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type == packets.Publish && r.old.State.Inflight.Delete(pk.PacketID) {
			dst = append(dst, pk)
		}
	}
	for _, e := range r.earlier {
		dst = e.collect(dst)
	}
	return dst
}

// OnQosPublish catches a message routed to the replaced client after its
// session was handed over: by a publish that looked the client id up just
// before the new client was registered.
func (h *takeoverHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || !cl.IsTakenOver() {
		return
	}
	h.mu.Lock()
	cur, ok := h.srv.Clients.Get(cl.ID)
	if !ok || cur == cl || h.pending(cl) {
		// The takeover has not collected yet: it will find the message.
		h.mu.Unlock()
		return
	}
	var sends []handover
	if cl.State.Inflight.Delete(pk.PacketID) {
		sends = h.place(cur, pk, nil)
	}
	h.mu.Unlock()
	h.send(sends)
}

// pending reports whether a takeover of cl has yet to collect what cl
// holds. h.mu must be held.
func (h *takeoverHook) pending(cl *mqtt.Client) bool {
	_, ok := h.resumes[cl]
	return ok
}

// handover is a message put in flight with a client, to be written to it.
type handover struct {
	cl *mqtt.Client
	pk packets.Packet
}

// maxPlaceHops bounds how many successive takeovers place follows.
const maxPlaceHops = 16

// place puts pk in flight with cl as a new message and appends it to sends
// for writing. If cl has itself been taken over and that takeover has
// already collected what cl held, the message would be stranded there, so
// it moves on to the client now registered under the id. h.mu must be held,
// which keeps place and the collecting of a takeover apart.
func (h *takeoverHook) place(cl *mqtt.Client, pk packets.Packet, sends []handover) []handover {
	for range maxPlaceHops {
		id, err := cl.NextPacketID()
		if err != nil {
			h.srv.Log.Warn("cannot hand a message over to the resumed session: no packet id", "client", cl.ID, "topic", pk.TopicName)
			return sends
		}
		out := pk.Copy(false)
		out.PacketID = uint16(id)
		out.FixedHeader.Dup = false
		cl.State.Inflight.Set(out) // resent with the session if this connection fails too
		if !cl.IsTakenOver() || h.pending(cl) {
			h.redelivered.Add(1)
			return append(sends, handover{cl, out})
		}
		next, ok := h.srv.Clients.Get(cl.ID)
		if !ok || next == cl || !cl.State.Inflight.Delete(out.PacketID) {
			return sends // no one to move it to; or taken already, by whoever deleted it
		}
		cl = next
	}
	h.srv.Log.Warn("cannot hand a message over to the resumed session: taken over too often meanwhile", "client", cl.ID, "topic", pk.TopicName)
	return sends
}

// send writes the messages place put in flight. A failed write leaves the
// message in flight, for the session's next connection.
func (h *takeoverHook) send(sends []handover) {
	for _, s := range sends {
		if err := s.cl.WritePacket(s.pk); err != nil {
			h.srv.Log.Debug("handing a message over to the resumed session", "client", s.cl.ID, "err", err)
		}
	}
}

// holds reports whether cl has pk in flight: the same packet id, topic and
// payload.
func holds(cl *mqtt.Client, pk packets.Packet) bool {
	in, ok := cl.State.Inflight.Get(pk.PacketID)
	return ok && in.TopicName == pk.TopicName && bytes.Equal(in.Payload, pk.Payload)
}
