package bench

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
)

// TestAgentsGetTheFleetsBatch: the coordinator gives every agent the
// fleet's batch (--batch) and batch wait, through the run request's JSON,
// and each agent's fleet runs with them.
func TestAgentsGetTheFleetsBatch(t *testing.T) {
	fc := devices.Config{Devices: 10, Rate: 100, Duration: time.Second, Batch: 50, BatchWait: 2 * time.Second}
	parts, err := splitFleet(fc, 3, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		body, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var got AgentPart
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields() // as the agent reads it
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		c := got.fleetConfig(devices.Config{Broker: "tcp://agent:1883"})
		if c.Batch != 50 || c.BatchWait != 2*time.Second || c.Broker != "tcp://agent:1883" {
			t.Errorf("part %d runs batch %d, wait %v, broker %s: want the fleet's 50 and 2s, its own broker", i+1, c.Batch, c.BatchWait, c.Broker)
		}
	}
}

// TestDeviceIntervalIsOfMessages: the histograms' correction for
// coordinated omission takes a device's messages as due every batch of
// readings, so that a batch's wait for its last reading is no stall.
func TestDeviceIntervalIsOfMessages(t *testing.T) {
	for _, tt := range []struct {
		fc   devices.Config
		want time.Duration
	}{
		{devices.Config{Devices: 10, Rate: 100}, 100 * time.Millisecond},
		{devices.Config{Devices: 10, Rate: 100, Batch: 1}, 100 * time.Millisecond},
		{devices.Config{Devices: 10, Rate: 100, Batch: 5}, 500 * time.Millisecond},
		// 10 readings a second a device: a second's wait sends 11.
		{devices.Config{Devices: 10, Rate: 100, Batch: 100}, 1100 * time.Millisecond},
		{devices.Config{Rate: 100, Batch: 5}, 0}, // no devices given: no correction
	} {
		if got := deviceInterval(tt.fc); (got - tt.want).Abs() > time.Microsecond {
			t.Errorf("devices %d, rate %v, batch %d: interval %v, want %v", tt.fc.Devices, tt.fc.Rate, tt.fc.Batch, got, tt.want)
		}
	}
}

// TestCeilingCountsTheReadingsOfBatches: with --batch the bare broker's
// subscriber counts every reading of a batch, so that the ceiling and the
// pipeline's rate are both in readings.
func TestCeilingCountsTheReadingsOfBatches(t *testing.T) {
	fc := devices.Config{Devices: 4, Rate: 400, Duration: time.Second, Batch: 10, Seed: 1}
	if err := (Config{Ceiling: true, Fleet: fc}).Validate(); err != nil && strings.Contains(err.Error(), "--ceiling") {
		t.Fatalf("--ceiling refused with --batch: %v", err)
	}
	c, err := ceiling(t.Context(), fc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sent != 400 || c.Received != 400 {
		t.Errorf("ceiling sent %d readings and received %d, want 400 and 400 (in about 40 messages)", c.Sent, c.Received)
	}
}
