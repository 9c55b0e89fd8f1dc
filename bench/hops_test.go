package bench

import (
	"bytes"
	"testing"
	"time"
)

// Two runs' logs merge into the histograms of the union of their
// readings, hop by hop.
func TestHistogramLogsMerge(t *testing.T) {
	a, b, union := NewHops(0), NewHops(0), NewHops(0)
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		a.Record(HopStored, d)
		union.Record(HopStored, d)
		e := time.Duration(i) * 3 * time.Millisecond
		b.Record(HopStored, e)
		union.Record(HopStored, e)
		b.Record(HopFeed, d/10)
		union.Record(HopFeed, d/10)
	}
	var la, lb bytes.Buffer
	if err := a.WriteLog(&la); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteLog(&lb); err != nil {
		t.Fatal(err)
	}
	merged, err := MergeLogs(&la, &lb)
	if err != nil {
		t.Fatal(err)
	}
	want := union.Summary()
	for _, hop := range []string{HopStored, HopFeed} {
		h, ok := merged[hop]
		if !ok {
			t.Fatalf("merged logs have no %s (tags %v)", hop, sortedKeys(merged))
		}
		got := percentiles(h, want[hop].Count, 0)
		if got.Corrected != want[hop].Corrected || got.P50 != want[hop].P50 || got.P99 != want[hop].P99 || got.Max != want[hop].Max {
			t.Errorf("%s merged: %+v, want the union's %+v", hop, got, want[hop])
		}
	}
	if got := merged[HopStored].TotalCount(); got != 2000 {
		t.Errorf("stored: %d values merged, want 2000", got)
	}
}

// A reading held up for ten of its device's intervals stands for the
// readings the device would have sent meanwhile.
func TestHopsCorrectForCoordinatedOmission(t *testing.T) {
	h := NewHops(100 * time.Millisecond)
	for range 99 {
		h.Record(HopAck, time.Millisecond)
	}
	h.Record(HopAck, time.Second)
	p := h.Summary()[HopAck]
	if p.Count != 100 {
		t.Errorf("count %d, want the 100 readings measured", p.Count)
	}
	// 1 s at a 100 ms interval adds 900, 800, ..., 100 ms: 9 samples.
	if p.Corrected != 109 {
		t.Errorf("corrected count %d, want 109", p.Corrected)
	}
	if p.P99 < 800 {
		t.Errorf("p99 %.1f ms, want the stall to show (uncorrected it would be 1 ms)", p.P99)
	}
	raw := NewHops(0)
	for range 99 {
		raw.Record(HopAck, time.Millisecond)
	}
	raw.Record(HopAck, time.Second)
	if p := raw.Summary()[HopAck]; p.P99 > 2 {
		t.Errorf("uncorrected p99 %.1f ms, want about 1 ms", p.P99)
	}
}

func TestBottleneck(t *testing.T) {
	cases := []struct {
		name string
		r    Report
		want string
	}{
		{"everything kept up", Report{TargetRate: 5000, AchievedRate: 5000, StoredRate: 5000,
			Backlog: BacklogReport{Replication: map[string]uint64{"us-east<-eu-west": 300}, StoragePending: 800}},
			"none: every stage kept up with 5000 readings/s (the largest backlog was under a second of readings)"},
		{"replication fell behind", Report{TargetRate: 5000, AchievedRate: 5000, StoredRate: 4000,
			Backlog: BacklogReport{Replication: map[string]uint64{"us-east<-eu-west": 160000, "ap-south<-eu-west": 20}, StoragePending: 900}},
			"replication us-east<-eu-west, lag peaked at 160000 messages (40.0 s of readings)"},
		{"storage fell behind", Report{TargetRate: 5000, AchievedRate: 5000, StoredRate: 5000,
			Backlog: BacklogReport{Replication: map[string]uint64{"us-east<-eu-west": 100}, StoragePending: 25000}},
			"storage, messages pending in its consumer peaked at 25000 messages (5.0 s of readings)"},
		// 7,049 v2 messages of 100 readings are 7 s at 100,000/s, not the
		// 0.07 s their count alone would say.
		{"storage fell behind with batches", Report{TargetRate: 100000, ReadingsPerMessage: 100, AchievedRate: 100000, StoredRate: 92922,
			Backlog: BacklogReport{Replication: map[string]uint64{"us-east<-eu-west": 26}, StoragePending: 7049}},
			"storage, messages pending in its consumer peaked at 7049 messages (about 704900 readings, 7.6 s of readings)"},
		{"ingest held the devices back", Report{TargetRate: 20000, AchievedRate: 11000, Skipped: 40000, StoredRate: 11000,
			Backlog: BacklogReport{PublishersHeld: 120, IngestInflight: 3072}},
			"ingest: the broker held up to 120 devices back because ingest had too much in flight (up to 3072 readings awaiting JetStream)"},
		{"the broker could not keep up", Report{TargetRate: 20000, AchievedRate: 11000, Skipped: 40000,
			Latency: map[string]Percentiles{HopAck: {P99: 2300}}},
			"the broker or the fleet itself: devices' in-flight windows were full (PUBACK p99 2300 ms), 40000 due readings skipped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := bottleneck(c.r); got != c.want {
				t.Errorf("bottleneck:\n got %s\nwant %s", got, c.want)
			}
		})
	}
}
