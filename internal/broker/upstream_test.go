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
		"mochi-mqtt/server#545: a resumed session's SUBSCRIBE refused with 0x91 (flow.go ignores refused filters, internal/mqttsub subscribes again); "+
			"mochi-mqtt/server#541 and #508: Close races with connections being attached (TestCloseWhileClientsJoin runs without -race)")
}
