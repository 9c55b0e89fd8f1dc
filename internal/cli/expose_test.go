package cli_test

import (
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
)

// TestExposure: what a command says on start about who can reach it, with
// the demo's public defaults (pipeline.DemoConfig.PublicDefaults).
func TestExposure(t *testing.T) {
	demo := pipeline.DemoConfig{MQTT: "127.0.0.1:1883", Auth: pipeline.MQTTAuth{FleetSecret: deploy.DemoFleetSecret, IngestPassword: deploy.DemoMQTTIngestPassword}}
	exposedMQTT := demo
	exposedMQTT.MQTT = "0.0.0.0:1883"
	ownPasswords := exposedMQTT
	ownPasswords.Auth.FleetSecret, ownPasswords.Auth.IngestPassword = "a-fleet-secret-of-our-own", "s3cret2"
	remoteCH := demo
	remoteCH.ClickHouse = "10.0.0.7:9000"
	remoteCH.ClickHouseUsers.ClickHousePassword = deploy.DemoClickHouseWriterPassword

	for _, tc := range []struct {
		name, listen string
		secrets      []string
		want         []string // substrings of the notices, in order; "!" marks a warning
	}{
		{"loopback", "127.0.0.1:8080", demo.PublicDefaults(), []string{"--listen 0.0.0.0:8080"}},
		{"localhost", "localhost:9090", nil, []string{"--listen 0.0.0.0:9090"}},
		{"ipv6 loopback", "[::1]:8080", nil, []string{"this machine only"}},
		{"exposed, nothing default reachable", "0.0.0.0:8080", demo.PublicDefaults(), nil},
		{"exposed MQTT with demo passwords", "0.0.0.0:8080", exposedMQTT.PublicDefaults(), []string{"!MQTT broker on 0.0.0.0:1883"}},
		{"loopback page, exposed MQTT", "127.0.0.1:8080", exposedMQTT.PublicDefaults(), []string{"this machine only", "!MQTT broker"}},
		{"exposed MQTT with own passwords", "[::]:8080", ownPasswords.PublicDefaults(), nil},
		{"remote ClickHouse with demo passwords", "0.0.0.0:8080", remoteCH.PublicDefaults(), []string{"!ClickHouse users on 10.0.0.7:9000"}},
		{"dashboard with demo NATS password", "0.0.0.0:8080", cli.DemoNATSPasswords("nats://dashboard:dashboard@nats-us-east:4222", "nats://dashboard:other@nats-eu-west:4222"),
			[]string{"!NATS user dashboard on nats-us-east:4222"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cli.Exposure("the dashboard", tc.listen, "set your own passwords", tc.secrets)
			if len(got) != len(tc.want) {
				t.Fatalf("notices %+v, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				warn := strings.HasPrefix(w, "!")
				if got[i].Warn != warn || !strings.Contains(got[i].Text, strings.TrimPrefix(w, "!")) {
					t.Errorf("notice %d = %+v, want warn=%v containing %q", i, got[i], warn, strings.TrimPrefix(w, "!"))
				}
			}
			if strings.Contains(strings.Join(tc.secrets, " "), "eu-west") {
				t.Errorf("a URL with its own password is listed: %q", tc.secrets)
			}
		})
	}
}
