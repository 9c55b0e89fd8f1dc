package stream_test

import (
	"testing"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestUpstreamVersionOfWorkarounds: the Mender works around nats-server's
// 30 s wait before a source asks the other region again; checked against
// this version, a new one fails here until it is checked again.
func TestUpstreamVersionOfWorkarounds(t *testing.T) {
	testharness.UpstreamVersion(t, "github.com/nats-io/nats-server/v2", "v2.15.2",
		"nats-io/nats-server#6454: a source whose consumer request went unanswered waits 30 s (Mender restarts it; TestSourcesResumeRightAfterRegionsReturn)")
}
