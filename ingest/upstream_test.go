package ingest

import (
	"testing"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestUpstreamVersionOfPaho: ingest's client (mqtt.go) relies on two
// behaviours of this paho version, checked against it; a new version fails
// here until they are checked again.
func TestUpstreamVersionOfPaho(t *testing.T) {
	testharness.UpstreamVersion(t, "github.com/eclipse/paho.mqtt.golang", "v1.5.1",
		"a message's Ack after its connection ended is dropped, never sent on the next connection, where the packet id may name another message (router.go, matchAndDispatch; eclipse-paho/paho.mqtt.golang#726); "+
			"a handler that blocks holds paho's reader, so a PINGRESP goes unread and the connection is dropped (eclipse-paho/paho.mqtt.golang#208, #453): ingest blocks only while JetStream is behind by MaxInflight")
}
