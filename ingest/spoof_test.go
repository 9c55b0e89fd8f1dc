package ingest_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestSpoofedDeviceIsDeadLetteredAsTopicMismatch is ingest's identity
// check: a reading whose payload names another device than its topic's
// device-id is dead-lettered as topic_mismatch, never stored. With the
// broker's ACL the topic's device-id is the publisher's authenticated
// client id, so the check stops a device speaking for another; and where a
// broker lets anyone publish anywhere (misconfigured: the test-only open
// Mosquitto, the demo's --insecure), it still stops a payload that
// disagrees with its topic.
func TestSpoofedDeviceIsDeadLetteredAsTopicMismatch(t *testing.T) {
	const victimTopic = "telemetry/us-east/thermostat/th-00001" // device A's topic
	cases := []struct {
		name     string
		broker   func(t *testing.T) string // URL
		clientID string                    // the publisher's
		creds    bool                      // the fleet's credentials, else anonymous
	}{
		{"mosquitto with the ACL: device A's payload claims B", func(t *testing.T) string {
			user, _ := testharness.DeviceLogin("us-east", "thermostat", "th-00001")
			return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Devices: []string{user}}).URL()
		}, "th-00001", true},
		{"mosquitto open (misconfigured): B publishes on A's topic", func(t *testing.T) string {
			return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Open: true}).URL()
		}, "th-00002", false},
		{"embedded with the ACL: device A's payload claims B", func(t *testing.T) string {
			return startEmbedded(t, false)
		}, "th-00001", true},
		{"embedded --insecure: anonymous B publishes on A's topic", func(t *testing.T) string {
			return startEmbedded(t, true)
		}, "th-00002", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			brokerURL := c.broker(t)
			_, natsURL := testharness.NATS(t, "us-east")
			js := jetStream(t, natsURL, "us-east")
			topo := stream.DefaultTopology([]string{"us-east"})
			for _, sc := range []jetstream.StreamConfig{topo.ReadingsConfig("us-east"), topo.DeadLetterConfig("us-east")} {
				if _, err := js.CreateStream(context.Background(), sc); err != nil {
					t.Fatal(err)
				}
			}
			// Ingest logs in as its own user in every case.
			runIngest(t, ingest.Config{Region: "us-east", Broker: brokerURL, NATSURL: natsURL, MaxInflight: 64})

			opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(c.clientID)
			if c.creds {
				user, password := testharness.DeviceLogin("us-east", "thermostat", c.clientID)
				opts.SetUsername(user).SetPassword(password)
			}
			pub := mqtt.NewClient(opts)
			if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("connecting %s: %v", c.clientID, tok.Error())
			}
			defer pub.Disconnect(100)
			spoofed := reading("th-00002", 1, time.Now())
			publish(t, pub, victimTopic, spoofed)

			waitStored(t, js, stream.DeadLetterStream, 1)
			m := readStream(t, js, stream.DeadLetterStream)[0]
			if got := m.Header.Get(protocol.HeaderReason); got != string(protocol.ReasonTopicMismatch) {
				t.Errorf("reason %q, want %s", got, protocol.ReasonTopicMismatch)
			}
			if m.Subject != "deadletter.us-east.topic_mismatch" || m.Header.Get(protocol.HeaderTopic) != victimTopic || string(m.Data) != string(spoofed) {
				t.Errorf("dead letter %s, topic %q, body %q", m.Subject, m.Header.Get(protocol.HeaderTopic), m.Data)
			}
			if d := m.Header.Get(protocol.HeaderDetail); !strings.Contains(d, "th-00002") || !strings.Contains(d, "th-00001") {
				t.Errorf("detail %q does not name both devices", d)
			}
			if n := streamMsgs(t, js, stream.ReadingsStream); n != 0 {
				t.Errorf("READINGS holds %d: the spoofed reading was stored", n)
			}
		})
	}
}

func startEmbedded(t *testing.T, insecure bool) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Insecure: insecure}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.URL()
}
