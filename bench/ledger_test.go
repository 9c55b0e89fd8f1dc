package bench

import (
	"testing"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// TestAccountHostile checks the matching of hostile messages to dead
// letters: a message under another reason is misclassified, an
// acknowledged one not found is missing, an unacknowledged one not found is
// unconfirmed.
func TestAccountHostile(t *testing.T) {
	const run = 77
	f, err := devices.New(devices.Config{Devices: 1, Boot: run, Seed: 9}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := devices.ChaosCases()
	marker := func(n uint64) devices.ChaosMarker {
		return devices.ChaosMarker{Run: run, Device: 0, N: n, Case: f.ChaosCase(0, n)}
	}
	wrong := func(n uint64) string {
		if cases[marker(n).Case].Reason == protocol.ReasonBadJSON {
			return string(protocol.ReasonBadField)
		}
		return string(protocol.ReasonBadJSON)
	}
	dl := &deadLetters{hostile: map[devices.ChaosMarker]deadLetter{
		marker(1): {reason: string(cases[marker(1).Case].Reason)},
		marker(2): {reason: wrong(2)},
		// 3: acknowledged, never dead-lettered.
		marker(4): {reason: string(cases[marker(4).Case].Reason)},
		// 5: not acknowledged, never dead-lettered.
	}}
	rep := Report{Hostile: HostileReport{ByReason: map[string]*ReasonLedger{}}}
	accountHostile(&rep, f, []devices.DeviceHostile{{Index: 0, Sent: 5, Acked: 4}}, []*deadLetters{dl}, run)
	h := rep.Hostile
	if h.AsExpected != 2 || h.Misclassified != 1 || h.Missing != 1 || h.Unconfirmed != 1 || h.DeadLettered != 3 {
		t.Errorf("hostile %+v: want 2 as expected, 1 misclassified, 1 missing, 1 unconfirmed, 3 dead-lettered", h)
	}
	if len(h.Examples) != 2 || h.Examples[0].Got != wrong(2) || h.Examples[1].Got != "" {
		t.Errorf("examples %+v: want the misclassified one, then the missing one", h.Examples)
	}
}
