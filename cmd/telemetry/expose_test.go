package main

import (
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
)

func TestExposure(t *testing.T) {
	demo := demoFlags{mqtt: "127.0.0.1:1883", fleetSecret: deploy.DemoFleetSecret, mqttIngestPass: deploy.DemoMQTTIngestPassword}
	exposedMQTT := demo
	exposedMQTT.mqtt = "0.0.0.0:1883"
	ownPasswords := exposedMQTT
	ownPasswords.fleetSecret, ownPasswords.mqttIngestPass = "a-fleet-secret-of-our-own", "s3cret2"
	remoteCH := demo
	remoteCH.clickhouse = "10.0.0.7:9000"
	remoteCH.chUsers.ClickHousePassword = deploy.DemoClickHouseWriterPassword

	for _, tc := range []struct {
		name, listen string
		secrets      []string
		want         []string // substrings of the notices, in order; "!" marks a warning
	}{
		{"loopback", "127.0.0.1:8080", demoSecretsOfDemo(demo), []string{"--listen 0.0.0.0:8080"}},
		{"localhost", "localhost:9090", nil, []string{"--listen 0.0.0.0:9090"}},
		{"ipv6 loopback", "[::1]:8080", nil, []string{"this machine only"}},
		{"exposed, nothing default reachable", "0.0.0.0:8080", demoSecretsOfDemo(demo), nil},
		{"exposed MQTT with demo passwords", "0.0.0.0:8080", demoSecretsOfDemo(exposedMQTT), []string{"!MQTT broker on 0.0.0.0:1883"}},
		{"loopback page, exposed MQTT", "127.0.0.1:8080", demoSecretsOfDemo(exposedMQTT), []string{"this machine only", "!MQTT broker"}},
		{"exposed MQTT with own passwords", "[::]:8080", demoSecretsOfDemo(ownPasswords), nil},
		{"remote ClickHouse with demo passwords", "0.0.0.0:8080", demoSecretsOfDemo(remoteCH), []string{"!ClickHouse users on 10.0.0.7:9000"}},
		{"dashboard with demo NATS password", "0.0.0.0:8080", demoNATSPasswords("nats://dashboard:dashboard@nats-us-east:4222", "nats://dashboard:other@nats-eu-west:4222"),
			[]string{"!NATS user dashboard on nats-us-east:4222"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exposure("the dashboard", tc.listen, "set your own passwords", tc.secrets)
			if len(got) != len(tc.want) {
				t.Fatalf("notices %+v, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				warn := strings.HasPrefix(w, "!")
				if got[i].warn != warn || !strings.Contains(got[i].text, strings.TrimPrefix(w, "!")) {
					t.Errorf("notice %d = %+v, want warn=%v containing %q", i, got[i], warn, strings.TrimPrefix(w, "!"))
				}
			}
			if strings.Contains(strings.Join(tc.secrets, " "), "eu-west") {
				t.Errorf("a URL with its own password is listed: %q", tc.secrets)
			}
		})
	}
}
