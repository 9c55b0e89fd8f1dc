package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/devices"
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
	var rep bench.Report
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
	for _, r := range devices.ChaosReasons() {
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
	// Each duplicate sent on purpose reaches JetStream as a copy of an
	// acknowledged reading and is counted for its device.
	var suppressed uint64
	for d, n := range rep.Duplicates.ByDevice {
		if !strings.HasPrefix(d, rep.IDPrefix) {
			t.Errorf("duplicates of %s reported: not one of the run's devices (%s*)", d, rep.IDPrefix)
		}
		suppressed += n
	}
	if d := rep.Duplicates; suppressed < d.Sent || suppressed > d.Sent+d.Resent {
		t.Errorf("suppressed by device %v (%d in all): want between the %d sent on purpose and that plus the %d resent", d.ByDevice, suppressed, d.Sent, d.Resent)
	}
	for _, hop := range []string{bench.HopIngest, bench.HopStored, bench.HopJetStream, bench.HopFeed} {
		if got := rep.Latency[hop].Count; got != rep.Stored {
			t.Errorf("latency of %s: %d readings measured, want one per stored reading (%d)", hop, got, rep.Stored)
		}
	}
	// Duplicates sent on purpose are acknowledged twice.
	if got := rep.Latency[bench.HopAck].Count; got < rep.Stored {
		t.Errorf("latency of %s: %d acknowledgements, want one per stored reading (%d) or more", bench.HopAck, got, rep.Stored)
	}
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		// Every reading is copied to the two regions it was not sent to.
		if got, want := rep.Latency[bench.HopReplicated(r)].Count, rep.Stored*2/3; got < want*9/10 {
			t.Errorf("latency of copies to %s: %d readings, want about %d", r, got, want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
