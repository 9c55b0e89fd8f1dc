package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestBenchAgainstDemoWithChaos runs `telemetry bench --demo` for a few
// seconds with every device behaviour and 10 % hostile messages, and checks
// the ledger: nothing lost, every valid reading stored, every hostile
// message dead-lettered under the reason it should get.
func TestBenchAgainstDemoWithChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline and ClickHouse")
	}
	testharness.RequireClickHouse(t)
	var stdout, stderr bytes.Buffer
	err := runBench([]string{
		"--demo", "--data-dir", t.TempDir(), "--json",
		"--devices", "30", "--rate", "300", "--duration", "4s", "--seed", "5",
		"--chaos", "0.1", "--reboots", "0.01", "--duplicates", "0.02", "--reorder", "0.02", "--clock-skew", "10s",
		"--drain-timeout", "60s",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, tail(stderr.String(), 4000), stdout.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("decoding the report: %v\n%s", err, stdout.String())
	}
	t.Logf("report:\n%s", stdout.String())

	if !rep.OK || rep.Lost != 0 || len(rep.Missing) != 0 || len(rep.Problems) != 0 {
		t.Errorf("ok %v, lost %d, missing %v, problems %v: want ok and nothing lost", rep.OK, rep.Lost, rep.Missing, rep.Problems)
	}
	if rep.Sent == 0 || rep.Stored != rep.Sent || rep.Acked != rep.Sent {
		t.Errorf("sent %d, acked %d, stored %d: want every valid reading acknowledged and stored", rep.Sent, rep.Acked, rep.Stored)
	}
	h := rep.Hostile
	if h.Sent == 0 || h.AsExpected != h.Sent || h.Misclassified != 0 || h.Missing != 0 || h.Unconfirmed != 0 {
		t.Errorf("hostile %+v: want every one sent dead-lettered under its expected reason", h)
	}
	for _, r := range protocol.Reasons {
		if l := h.ByReason[string(r)]; l == nil || l.Expected == 0 || l.AsExpected != l.Expected {
			t.Errorf("reason %s: %+v, want some hostile messages, all as expected", r, l)
		}
	}
	var dead uint64
	for _, n := range rep.DeadLettered {
		dead += n
	}
	if dead != h.Sent || len(rep.RejectedReadings) != 0 {
		t.Errorf("dead-lettered %v (%d), rejected readings %v: want exactly the %d hostile messages", rep.DeadLettered, dead, rep.RejectedReadings, h.Sent)
	}
	if rep.Behaviours.Reboots == 0 || rep.Behaviours.Boots <= rep.Devices || rep.Duplicates.Sent == 0 || rep.Behaviours.Reordered == 0 {
		t.Errorf("behaviours %+v, duplicates %+v: want reboots, duplicates and reordering", rep.Behaviours, rep.Duplicates)
	}
	if rep.Latency.ToIngest.Count != rep.Stored || rep.Latency.ToStored.Count != rep.Stored {
		t.Errorf("latency %+v: want one value per stored reading (%d)", rep.Latency, rep.Stored)
	}
}

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
	rep := BenchReport{Hostile: HostileReport{ByReason: map[string]*ReasonLedger{}}}
	accountHostile(&rep, f, []devices.DeviceHostile{{Index: 0, Sent: 5, Acked: 4}}, []*deadLetters{dl}, run)
	h := rep.Hostile
	if h.AsExpected != 2 || h.Misclassified != 1 || h.Missing != 1 || h.Unconfirmed != 1 || h.DeadLettered != 3 {
		t.Errorf("hostile %+v: want 2 as expected, 1 misclassified, 1 missing, 1 unconfirmed, 3 dead-lettered", h)
	}
	if len(h.Examples) != 2 || h.Examples[0].Got != wrong(2) || h.Examples[1].Got != "" {
		t.Errorf("examples %+v: want the misclassified one, then the missing one", h.Examples)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
