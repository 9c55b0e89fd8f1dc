package broker_test

import (
	"testing"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestUpstreamVersionOfWorkarounds: the workarounds of mochi's bugs were
// checked against this version; a new one fails here until they are
// checked again.
func TestUpstreamVersionOfWorkarounds(t *testing.T) {
	testharness.UpstreamVersion(t, "github.com/mochi-mqtt/server/v2", "v2.7.9",
		"mochi-mqtt/server#545: a resumed session's SUBSCRIBE refused with 0x91 (flow.go ignores refused filters, ingest/mqtt.go subscribes again); "+
			"mochi-mqtt/server#488 (#489): Close deadlocks on the client list, and #424, #541 (#508): Close races with connections being attached (Broker.Close closes the listeners' clients itself and again until Close returns; TestCloseWhileClientsJoin runs without -race)")
}
