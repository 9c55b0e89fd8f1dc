package scenario

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
)

func sent(device string, boot, last, acked uint64) devices.DeviceSent {
	first := uint64(0)
	if last > 0 {
		first = 1
	}
	return devices.DeviceSent{Device: device, Boot: boot, FirstSeq: first, LastSeq: last, Acked: acked}
}

func TestWindowsPerDeviceAndBoot(t *testing.T) {
	type want struct {
		device          string
		boot, from, to  uint64
		acked, ackedLen uint64
	}
	cases := []struct {
		name                string
		start, end, settled []devices.DeviceSent
		want                []want
	}{
		{
			name:    "readings between the records; those in flight at the end acknowledged later",
			start:   []devices.DeviceSent{sent("a", 1, 10, 8)},
			end:     []devices.DeviceSent{sent("a", 1, 30, 27)},
			settled: []devices.DeviceSent{sent("a", 1, 45, 44)},
			want:    []want{{"a", 1, 11, 30, 30, 20}},
		},
		{
			name:    "acknowledgements of readings sent before the start are not the window's",
			start:   []devices.DeviceSent{sent("a", 1, 10, 4)},
			end:     []devices.DeviceSent{sent("a", 1, 12, 9)},
			settled: []devices.DeviceSent{sent("a", 1, 12, 10)},
			want:    []want{{"a", 1, 11, 12, 10, 0}},
		},
		{
			name:    "a reboot in the window: the rest of the old boot, the new boot from seq 1",
			start:   []devices.DeviceSent{sent("b", 1, 5, 5)},
			end:     []devices.DeviceSent{sent("b", 1, 7, 6), sent("b", 2, 4, 3)},
			settled: []devices.DeviceSent{sent("b", 1, 7, 7), sent("b", 2, 9, 9)},
			want:    []want{{"b", 1, 6, 7, 7, 2}, {"b", 2, 1, 4, 4, 4}},
		},
		{
			name:    "reboots before the start: only the boots with readings in the window",
			start:   []devices.DeviceSent{sent("c", 1, 50, 50), sent("c", 2, 3, 3)},
			end:     []devices.DeviceSent{sent("c", 1, 50, 50), sent("c", 2, 3, 3), sent("c", 3, 2, 2), sent("c", 4, 6, 6)},
			settled: []devices.DeviceSent{sent("c", 1, 50, 50), sent("c", 2, 3, 3), sent("c", 3, 2, 2), sent("c", 4, 9, 9)},
			want:    []want{{"c", 3, 1, 2, 2, 2}, {"c", 4, 1, 6, 6, 6}},
		},
		{
			name:    "nothing acknowledged: every reading unconfirmed",
			start:   []devices.DeviceSent{sent("d", 1, 3, 0)},
			end:     []devices.DeviceSent{sent("d", 1, 9, 0)},
			settled: []devices.DeviceSent{sent("d", 1, 12, 0)},
			want:    []want{{"d", 1, 4, 9, 3, 0}},
		},
		{
			name:    "nothing published in the window",
			start:   []devices.DeviceSent{sent("e", 1, 5, 5), sent("f", 1, 0, 0)},
			end:     []devices.DeviceSent{sent("e", 1, 5, 5), sent("f", 1, 0, 0)},
			settled: []devices.DeviceSent{sent("e", 1, 5, 5), sent("f", 1, 0, 0)},
		},
		{
			name:    "a device's first readings, and a boot the settled record lacks",
			start:   []devices.DeviceSent{sent("g", 1, 0, 0)},
			end:     []devices.DeviceSent{sent("g", 1, 4, 2), sent("h", 9, 3, 1)},
			settled: []devices.DeviceSent{sent("g", 1, 8, 8)},
			want:    []want{{"g", 1, 1, 4, 4, 4}, {"h", 9, 1, 3, 1, 1}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []want
			for _, w := range windows(c.start, c.end, c.settled) {
				got = append(got, want{w.Device, w.Boot, w.From, w.To, w.acked, w.ackedLen()})
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("windows:\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// fakeFleet stands in for the demo's devices: every time it is looked at,
// each device publishes perLook more readings, of which the broker has
// acknowledged all but the last inFlight. Storage holds each acknowledged
// reading (with eager, each one sent), except those in lose. A device in
// silent is never acknowledged; rebootAt makes a device start a new boot
// at that look.
type fakeFleet struct {
	perLook  uint64
	inFlight uint64
	eager    bool
	silent   map[string]bool
	lose     map[string][]uint64 // device -> seqs of its current boot never stored
	rebootAt map[string]int

	mu    sync.Mutex
	looks int
	devs  map[string][]devices.DeviceSent
	order []string
}

func newFakeFleet(ids ...string) *fakeFleet {
	f := &fakeFleet{perLook: 3, inFlight: 1, silent: map[string]bool{}, lose: map[string][]uint64{}, rebootAt: map[string]int{},
		devs: map[string][]devices.DeviceSent{}, order: ids}
	for _, id := range ids {
		f.devs[id] = []devices.DeviceSent{sent(id, 100, 0, 0)}
	}
	return f
}

func (f *fakeFleet) sent() []devices.DeviceSent {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.looks++
	var out []devices.DeviceSent
	for _, id := range f.order {
		boots := f.devs[id]
		if f.rebootAt[id] == f.looks {
			last := &boots[len(boots)-1]
			if !f.silent[id] {
				last.Acked = last.LastSeq
			}
			boots = append(boots, sent(id, last.Boot+1, 0, 0))
		}
		cur := &boots[len(boots)-1]
		cur.LastSeq += f.perLook
		cur.FirstSeq = 1
		if !f.silent[id] {
			cur.Acked = cur.LastSeq - min(f.inFlight, cur.LastSeq)
		}
		f.devs[id] = boots
		out = append(out, boots...)
	}
	return out
}

// stored lists each range's stored seqs.
func (f *fakeFleet) stored(ranges []ledger.Range) [][]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]uint64, len(ranges))
	for i, r := range ranges {
		var acked uint64
		for _, b := range f.devs[r.Device] {
			if b.Boot == r.Boot {
				acked = b.Acked
				if f.eager && !f.silent[r.Device] {
					acked = b.LastSeq
				}
			}
		}
		out[i] = []uint64{}
		for seq := r.From; seq <= r.To && seq <= acked; seq++ {
			if !slices.Contains(f.lose[r.Device], seq) {
				out[i] = append(out[i], seq)
			}
		}
	}
	return out
}

func runScenario(t *testing.T, r *Runner, req Request) Result {
	t.Helper()
	run, err := r.Start(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.Wait(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The fleet is looked at once at the start and once at the end of the
// window: every device publishes perLook readings in between, which is
// what the ledger must count, whatever the fault.
func TestTheLedgerCountsTheTargetsFleet(t *testing.T) {
	fleet := newFakeFleet("th-00001", "th-00002", "vb-00003", "tr-00004")
	fleet.rebootAt["vb-00003"] = 2 // at the end of the window
	target := &recordingTarget{fleet: fleet}
	r := newTestRunnerWith(t, target, Config{poll: 5 * time.Millisecond})

	res := runScenario(t, r, Request{Name: KillIngest, Region: "us-east"})
	l := res.Ledger
	if !res.OK || l == nil || res.Error != "" {
		t.Fatalf("result %+v", res)
	}
	want := Tally{Devices: 4, Boots: 4, Counts: ledger.Counts{Sent: 12, Acked: 12, Stored: 12}}
	if l.Fleet == nil || *l.Fleet != want {
		t.Errorf("fleet %+v, want %+v", l.Fleet, want)
	}
	if l.Witnesses != nil || slices.ContainsFunc(target.Calls(), func(c string) bool { return strings.HasPrefix(c, "witness") }) {
		t.Errorf("witnesses %+v, calls %q: a fault scenario on a target with a fleet runs none", l.Witnesses, target.Calls())
	}
	if l.Sent != 12 || l.Acked != 12 || l.Stored != 12 || l.Lost != 0 || len(l.Missing) != 0 || l.Devices != 4 || l.Reboots != 1 {
		t.Errorf("ledger %+v", l)
	}
	// Only what the counters gained during the scenario: th-00002's
	// duplicate came before it.
	if l.Duplicates == nil || *l.Duplicates != 3 || !maps.Equal(l.DuplicatesByDevice, map[string]uint64{"th-00001": 3}) {
		t.Errorf("duplicates %v by device %v, want th-00001's 3 gained during the scenario", l.Duplicates, l.DuplicatesByDevice)
	}

	// Hostile-burst still has its witnesses, counted beside the fleet.
	res = runScenario(t, r, Request{Name: HostileBurst, Count: 10, Window: 20 * time.Millisecond})
	if l := res.Ledger; !res.OK || l == nil || l.Fleet == nil || l.Witnesses == nil ||
		l.Sent != l.Fleet.Sent+10 || l.Fleet.Sent != 12 || l.Devices != 4+4 {
		t.Errorf("hostile-burst: result %+v, ledger %+v", res, l)
	}
}

func TestTheLedgerFindsWhatTheFleetLost(t *testing.T) {
	fleet := newFakeFleet("th-00001", "th-00002", "th-00003")
	// Window: seq 4 to 6 of each (3 at the start, 6 at the end).
	fleet.lose["th-00001"] = []uint64{2, 5} // 2 is before the window
	fleet.silent["th-00003"] = true         // nothing acknowledged, nothing stored
	target := &recordingTarget{fleet: fleet}
	r := newTestRunnerWith(t, target, Config{poll: 5 * time.Millisecond, DrainTimeout: 100 * time.Millisecond})

	res := runScenario(t, r, Request{Name: CutRegion, Region: "eu-west"})
	l := res.Ledger
	if l == nil {
		t.Fatalf("no ledger: %+v", res)
	}
	want := Tally{Devices: 3, Boots: 3, Counts: ledger.Counts{Sent: 9, Acked: 6, Stored: 5, Lost: 1, Unconfirmed: 3}}
	if l.Fleet == nil || *l.Fleet != want {
		t.Errorf("fleet %+v, want %+v", l.Fleet, want)
	}
	wantMissing := []ledger.Range{{Device: "th-00001", Boot: 100, From: 5, To: 5}, {Device: "th-00003", Boot: 100, From: 4, To: 6}}
	if !reflect.DeepEqual(l.Missing, wantMissing) {
		t.Errorf("missing %+v, want %+v", l.Missing, wantMissing)
	}
	if res.OK || l.OK || l.Lost != 1 || len(l.Problems) == 0 {
		t.Errorf("result ok %v, ledger ok %v, lost %d, problems %q: want the loss reported", res.OK, l.OK, l.Lost, l.Problems)
	}
	if ev := r.Events(); !strings.Contains(ev[len(ev)-1].Text, "lost 1") {
		t.Errorf("end event %q", ev[len(ev)-1].Text)
	}
	var b strings.Builder
	WriteResult(&b, res)
	for _, s := range []string{"demo devices       3", "LOST               1", "missing th-00001 boot 100 seq 5..5", "unconfirmed        3"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("printed ledger lacks %q:\n%s", s, b.String())
		}
	}
}

// Storage can hold a reading before the device has its PUBACK: the drain
// waits for the acknowledgements too, so that every stored reading of the
// window is also counted as acknowledged.
func TestTheLedgerWaitsForAcknowledgementsOfStoredReadings(t *testing.T) {
	fleet := newFakeFleet("th-00001", "th-00002")
	fleet.inFlight, fleet.eager = 4, true // seq 6 of the window 4 to 6 is acknowledged two looks after the end
	target := &recordingTarget{fleet: fleet}
	r := newTestRunnerWith(t, target, Config{poll: 5 * time.Millisecond})
	res := runScenario(t, r, Request{Name: ClickHouseOutage})
	want := Tally{Devices: 2, Boots: 2, Counts: ledger.Counts{Sent: 6, Acked: 6, Stored: 6}}
	if l := res.Ledger; !res.OK || l == nil || l.Fleet == nil || *l.Fleet != want {
		t.Errorf("result %+v, ledger %+v: want fleet %+v", res, l, want)
	}
}
