package ingest

import (
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// outboundStore is ingest's paho store: what ingest sends (its SUBSCRIBEs)
// is kept in memory as paho's default store keeps it, for resending after a
// reconnect; the QoS 1 messages it receives are not kept at all. paho
// stores each received message until its PUBACK is written and, after a
// reconnect, drops what is left unread (the broker redelivers it), so
// storing them was only cost: a map insert and delete, and a log call,
// per reading.
type outboundStore struct{ mqtt.Store }

func newOutboundStore() outboundStore { return outboundStore{mqtt.NewMemoryStore()} }

func (s outboundStore) Put(key string, m packets.ControlPacket) {
	if !inbound(key) {
		s.Store.Put(key, m)
	}
}

func (s outboundStore) Del(key string) {
	if !inbound(key) {
		s.Store.Del(key)
	}
}

// inbound reports whether key is paho's key of a received packet ("i.<id>").
func inbound(key string) bool { return strings.HasPrefix(key, "i.") }
