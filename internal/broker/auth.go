package broker

import (
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// authHook is the broker's login and ACL: devices by the credential the
// fleet secret gives each (internal/devicecred), service users from a
// Mosquitto password file, rules from a Mosquitto ACL file. A denied QoS 1 publish makes
// mochi disconnect an MQTT 3.1.1 client (Mosquitto acknowledges it and
// drops the message instead); either way nothing is delivered.
type authHook struct {
	mqtt.HookBase
	passwords   Passwords
	fleetSecret string
	phoneKey    string // devicecred.PhoneKey of fleetSecret
	acl         *ACL
	insecure    bool
	failures    *connlimit.Failures // by address; nil: not counted (NewAuthHook)

	// phonesSince is when the presenter last removed the phones (unix
	// ms; 0: never): phones' credentials issued until then are refused.
	phonesSince atomic.Int64

	denied atomic.Uint64 // publishes, subscriptions and deliveries denied by the ACL
}

// NewAuthHook returns the hook that makes a mochi server apply cfg's
// Passwd, ACL and Insecure, for tests that run their own mochi server with
// hooks of their own beside it.
func NewAuthHook(cfg Config) (mqtt.Hook, error) { return newAuthHook(cfg) }

func newAuthHook(cfg Config) (*authHook, error) {
	pw, err := ParsePasswords(cfg.passwd())
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	acl, err := ParseACL(cfg.acl())
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return &authHook{passwords: pw, fleetSecret: cfg.fleetSecret(), phoneKey: devicecred.PhoneKey(cfg.fleetSecret()), acl: acl, insecure: cfg.Insecure}, nil
}

func (h *authHook) ID() string { return "telemetry-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate lets in a device with its own credential and its
// device id as client id (so that no device takes another's session; a
// phone's credential is short-lived and checked against the clock), a
// gateway with its own credential and its user name as client id, a
// service user whose password is in the password file, and a client
// without a user name only when insecure.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	ok := h.authenticate(cl, pk)
	if !ok && h.failures != nil {
		// Counted before mochi answers: a client that sees the refusal
		// and dials again finds it counted.
		h.failures.Add(connlimit.HostOf(cl.Net.Remote), time.Now())
	}
	return ok
}

func (h *authHook) authenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, password := string(pk.Connect.Username), string(pk.Connect.Password)
	if t, ok := devicecred.Parse(user); ok && t.DeviceType == devicecred.PhoneType {
		var since time.Time
		if ms := h.phonesSince.Load(); ms != 0 {
			since = time.UnixMilli(ms)
		}
		return cl.ID == t.Device && devicecred.CheckPhone(h.phoneKey, user, password, time.Now(), since)
	}
	if t, ok := devicecred.Parse(user); ok {
		return cl.ID == t.Device && devicecred.Check(h.fleetSecret, user, password)
	}
	if _, ok := devicecred.ParseGateway(user); ok {
		return cl.ID == user && devicecred.CheckGateway(h.fleetSecret, user, password)
	}
	return user == "" && h.insecure || user != "" && h.passwords.Check(user, password)
}

// OnACLCheck applies the ACL file, and to a gateway its own rule: it may
// publish on the topics of the devices it speaks for and do nothing else
// (internal/devicecred). A client without a user name is only here when
// insecure, and may do anything.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := cl.Properties.Username
	if len(user) == 0 && h.insecure {
		return true
	}
	var ok bool
	if g, isGateway := devicecred.ParseGateway(string(user)); isGateway {
		ok = write && gatewayMayPublish(g, topic)
	} else {
		ok = h.acl.Allowed(cl.ID, string(user), topic, write)
	}
	if !ok {
		h.denied.Add(1)
	}
	return ok
}

func gatewayMayPublish(g devicecred.Gateway, topic string) bool {
	t, err := protocol.ParseTopic(topic)
	return err == nil && g.SpeaksFor(t)
}

// Registry holds the broker's metrics (telemetry_broker_*), to be served
// at /metrics.
func (b *Broker) Registry() *prometheus.Registry { return b.reg }

// InflightDropped is how many QoS 1 and 2 messages the broker dropped
// because a client had too many in flight: readings lost between the broker
// and ingest.
func (b *Broker) InflightDropped() int64 { return atomic.LoadInt64(&b.srv.Info.InflightDropped) }

// PublishersHeld is how many publishers the flow hook holds back right now.
func (b *Broker) PublishersHeld() int64 { return b.flow.waiting.Load() }

func (b *Broker) collectors() []prometheus.Collector {
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "telemetry_broker_" + name, Help: help}, f)
	}
	return []prometheus.Collector{
		counter("inflight_dropped_total", "QoS 1/2 messages dropped because the receiving client had the most allowed in flight (lost unless redelivered).",
			func() float64 { return float64(b.InflightDropped()) }),
		counter("messages_dropped_total", "Messages dropped because a subscriber's outbound queue was full.",
			func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.MessagesDropped)) }),
		b.tcp.refused, b.tcp.ended,
		counter("acl_denied_total", "Publishes, subscriptions and deliveries the ACL denied (a device publishing to another device's topic, a device subscribing).",
			func() float64 { return float64(b.auth.denied.Load()) }),
		counter("session_handovers_total", "QoS 1 messages handed over to a resumed persistent session that mochi would have lost while the session was taken over.",
			func() float64 { return float64(b.takeover.redelivered.Load()) }),
		counter("publishes_held_total", "QoS 1 publishes held back, before their PUBACK, because a subscriber they go to (ingest) had too many messages in flight: the broker's backpressure.",
			func() float64 { return float64(b.flow.held.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "telemetry_broker_publishers_held", Help: "Publishers held back right now (see telemetry_broker_publishes_held_total)."},
			func() float64 { return float64(b.flow.waiting.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "telemetry_broker_clients_connected", Help: "MQTT clients connected."},
			func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.ClientsConnected)) }),
	}
}
