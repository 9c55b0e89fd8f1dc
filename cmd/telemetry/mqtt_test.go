package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
)

// TestDemoInsecureOnlyOnLoopback: anonymous MQTT is refused outright on an
// address others can reach, before anything starts.
func TestDemoInsecureOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		var out, errb bytes.Buffer
		code := run([]string{"demo", "--insecure", "--mqtt", addr, "--data-dir", t.TempDir()}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "loopback") || !strings.Contains(errb.String(), "--insecure") {
			t.Errorf("demo --insecure --mqtt %s: exit %d, stderr %q; want a failure naming loopback and --insecure", addr, code, errb.String())
		}
	}
}

// TestDemoMQTTPasswords: the demo's broker runs from the repository's
// password file with the demo defaults, and from a file of its own with the
// passwords a presenter gives.
func TestDemoMQTTPasswords(t *testing.T) {
	file, err := mqttAuth{}.passwd()
	if err != nil || file != nil {
		t.Fatalf("default passwords: file %q, %v; want the repository's (nil)", file, err)
	}
	file, err = mqttAuth{devicePassword: "d-secret", ingestPassword: "i-secret"}.passwd()
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
		{deploy.MQTTDeviceUser, "d-secret", true},
		{deploy.MQTTIngestUser, "i-secret", true},
		{deploy.MQTTHealthUser, deploy.MQTTHealthPassword, true},
		{deploy.MQTTDeviceUser, deploy.DemoMQTTDevicePassword, false},
		{deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword, false},
	} {
		if got := pw.Check(c.user, c.password); got != c.ok {
			t.Errorf("%s with %q: %v, want %v", c.user, c.password, got, c.ok)
		}
	}
}
