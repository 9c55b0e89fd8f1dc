package bench

import (
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
)

// TestAgentsSplitTheFleetAtWholeGateways: with --gateway, each agent gets
// whole blocks of gateways (so no gateway connects from two agents), the
// parts still cover every device once, and each part's fleet is valid.
func TestAgentsSplitTheFleetAtWholeGateways(t *testing.T) {
	// 3 regions x 3 types x 4 devices per gateway: blocks of 36.
	fc := devices.Config{Devices: 100, Rate: 100, Duration: time.Second, Gateway: 4}
	parts, err := splitFleet(fc, 2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{} // gateway user -> part
	next := 0
	for i, p := range parts {
		if p.FirstDevice != next || p.FirstDevice%36 != 0 {
			t.Fatalf("part %d starts at device %d, want %d, a multiple of 36", i+1, p.FirstDevice, next)
		}
		next += p.Devices
		c := p.fleetConfig(devices.Config{Broker: "tcp://agent:1883"})
		if c.Gateway != 4 {
			t.Fatalf("part %d runs gateway %d, want the fleet's 4", i+1, c.Gateway)
		}
		users, err := devices.Usernames(c)
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		for _, u := range users {
			if j, ok := seen[u]; ok {
				t.Errorf("gateway %s is in parts %d and %d", u, j+1, i+1)
			}
			seen[u] = i
		}
	}
	if next != 100 {
		t.Errorf("the parts cover %d devices, want 100", next)
	}
	if _, err := splitFleet(devices.Config{Devices: 30, Gateway: 4}, 2, time.Now()); err == nil {
		t.Error("30 devices in one block of 36 were split over 2 agents")
	}
}
