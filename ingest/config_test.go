package ingest

import (
	"strings"
	"testing"
)

// A broker URL ingest cannot dial is refused before anything connects,
// with what it wants; the schemes it dials pass.
func TestBrokerURLIsCheckedUpFront(t *testing.T) {
	for broker, ok := range map[string]bool{
		"tcp://127.0.0.1:1883":        true,
		"mqtt://mosquitto:1884":       true,
		"ssl://broker.example:8883":   true,
		"mqtts://broker.example:8883": true,
		"http://127.0.0.1:1883":       false,
		"ws://127.0.0.1:9001":         false,
		"127.0.0.1:1883":              false,
		"tcp://":                      false,
	} {
		err := Config{Region: "us-east", Broker: broker, NATSURL: "nats://127.0.0.1:4222"}.Validate()
		if ok && err != nil {
			t.Errorf("%s: %v", broker, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "want tcp://host:port")) {
			t.Errorf("%s: error %v, want one saying what URL it takes", broker, err)
		}
	}
}
