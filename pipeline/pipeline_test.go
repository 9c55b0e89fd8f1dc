package pipeline

import (
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
)

// TestDemoMQTTPasswords: the demo's broker runs from the repository's
// password file with the demo defaults, and from a file of its own with the
// passwords a presenter gives.
func TestDemoMQTTPasswords(t *testing.T) {
	file, err := MQTTAuth{}.passwd()
	if err != nil || file != nil {
		t.Fatalf("default passwords: file %q, %v; want the repository's (nil)", file, err)
	}
	file, err = MQTTAuth{IngestPassword: "i-secret"}.passwd()
	if err != nil {
		t.Fatal(err)
	}
	pw, err := broker.ParsePasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		ok             bool
	}{
		{deploy.MQTTIngestUser, "i-secret", true},
		{deploy.MQTTHealthUser, deploy.MQTTHealthPassword, true},
		{deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword, false},
		{"device", "device", false}, // the old shared fleet user
	} {
		if got := pw.Check(c.user, c.password); got != c.ok {
			t.Errorf("%s with %q: %v, want %v", c.user, c.password, got, c.ok)
		}
	}
}
