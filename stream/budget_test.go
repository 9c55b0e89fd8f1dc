package stream

import (
	"strings"
	"testing"
	"time"
)

func TestBudgetHolds(t *testing.T) {
	b := DefaultTopology(DefaultRegions).Budget()
	// 1 GiB at 150 readings/s of 371 bytes: 19,293 s.
	if got := b.Holds(150); got < 5*time.Hour+20*time.Minute || got > 5*time.Hour+25*time.Minute {
		t.Errorf("1 GiB at 150/s holds %v, want about 5.36 h", got)
	}
	if got := b.Holds(5000); got < 9*time.Minute || got > 10*time.Minute {
		t.Errorf("1 GiB at 5,000/s holds %v, want about 9.6 min", got)
	}
	if got, want := b.Disk(), int64(3*(1<<30+256<<20)); got != want {
		t.Errorf("disk = %d, want %d", got, want)
	}
	line := b.Describe(150, 5000)
	for _, want := range []string{"1.0 GiB per region", "3.8 GiB on disk", "150 readings/s it holds 5.4 h", "5000 readings/s it holds 10 min"} {
		if !strings.Contains(line, want) {
			t.Errorf("Describe = %q, missing %q", line, want)
		}
	}
}

func TestTopologyRefusesATinyBudget(t *testing.T) {
	topo := DefaultTopology(DefaultRegions)
	topo.ReadingsMaxBytes = 1000
	if err := topo.Validate(); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("Validate = %v, want a budget error", err)
	}
}

func TestReadingsMakeRoomOldestFirst(t *testing.T) {
	cfg := DefaultTopology(DefaultRegions).ReadingsConfig("us-east")
	if cfg.Discard.String() != "DiscardOld" {
		t.Errorf("READINGS discard policy %v, want DiscardOld", cfg.Discard)
	}
}

// TestBudgetWarnsWhenTheDiskIsSmaller: Check fails, naming the disk and
// the budget, when the disk under the data dir has less room.
func TestBudgetWarnsWhenTheDiskIsSmaller(t *testing.T) {
	for _, c := range []struct {
		budget int64
		warn   bool
	}{{1 << 20, false}, {1 << 50, true}} { // 1 MiB fits any test disk; 1 PiB none
		topo := DefaultTopology(DefaultRegions)
		topo.ReadingsMaxBytes = c.budget
		err := topo.Budget().Check(t.TempDir())
		if got := err != nil && strings.Contains(err.Error(), "less than the streams' budget"); got != c.warn {
			t.Errorf("budget %d: Check = %v, want a warning %v", c.budget, err, c.warn)
		}
	}
}
