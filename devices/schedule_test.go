package devices

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestDueBy(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		elapsed time.Duration
		limit   uint64
		want    uint64
	}{
		{"nothing at the start", 100, 0, math.MaxUint64, 0},
		{"nothing before the start", 100, -time.Second, math.MaxUint64, 0},
		{"one tick at 100/s", 100, 10 * time.Millisecond, math.MaxUint64, 1},
		{"just before the second", 100, 19999999 * time.Nanosecond, math.MaxUint64, 1},
		{"two seconds at 100/s", 100, 2 * time.Second, math.MaxUint64, 200},
		{"slow rate", 0.5, 3 * time.Second, math.MaxUint64, 1},
		{"fractional rate", 33.3, 3 * time.Second, math.MaxUint64, 99},
		{"fractional exact", 0.1, 10 * time.Second, math.MaxUint64, 1},
		{"high rate, long run", 1e6, time.Hour, math.MaxUint64, 3_600_000_000},
		{"capped", 100, time.Minute, 250, 250},
		{"under the cap", 100, time.Second, 250, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dueBy(tt.rate, tt.elapsed, tt.limit); got != tt.want {
				t.Errorf("dueBy(%v, %v, %d) = %d, want %d", tt.rate, tt.elapsed, tt.limit, got, tt.want)
			}
		})
	}
}

func TestTotalFor(t *testing.T) {
	if got := totalFor(100, 2*time.Second); got != 200 {
		t.Errorf("totalFor(100, 2s) = %d, want 200", got)
	}
	if got := totalFor(7, 1500*time.Millisecond); got != 10 {
		t.Errorf("totalFor(7, 1.5s) = %d, want 10", got)
	}
	if got := totalFor(100, 0); got != math.MaxUint64 {
		t.Errorf("totalFor(100, 0) = %d, want no limit", got)
	}
}

// TestScheduleHoldsTheRate feeds dueBy irregular tick times, as a loaded
// machine delivers them, and checks that what is handed out in total
// always matches the rate, and that a run ends with exactly its total.
func TestScheduleHoldsTheRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, rate := range []float64{0.7, 100, 333.3, 10000} {
		duration := 5 * time.Second
		limit := totalFor(rate, duration)
		var issued uint64
		var elapsed time.Duration
		for issued < limit {
			// Ticks 10 ms apart, some up to 200 ms late.
			elapsed += 10*time.Millisecond + time.Duration(rng.IntN(2))*time.Duration(rng.Int64N(int64(200*time.Millisecond)))
			due := dueBy(rate, elapsed, limit)
			if due < issued {
				t.Fatalf("rate %v: due went back from %d to %d", rate, issued, due)
			}
			issued = due
			if exact := rate * elapsed.Seconds(); elapsed < duration && math.Abs(float64(issued)-exact) > 1 {
				t.Fatalf("rate %v after %v: %d handed out, want %.2f", rate, elapsed, issued, exact)
			}
		}
		if issued != uint64(rate*duration.Seconds()) {
			t.Errorf("rate %v for %v: %d in all, want %d", rate, duration, issued, uint64(rate*duration.Seconds()))
		}
	}
}

func TestSpread(t *testing.T) {
	type call struct {
		device int
		k      uint64
	}
	tests := []struct {
		name       string
		n          uint64
		cursor     int
		devices    int
		want       []call
		wantCursor int
	}{
		{"nothing", 0, 2, 5, nil, 2},
		{"fewer than devices", 3, 0, 5, []call{{0, 1}, {1, 1}, {2, 1}}, 3},
		{"wraps around", 3, 4, 5, []call{{4, 1}, {0, 1}, {1, 1}}, 2},
		{"one round", 5, 3, 5, []call{{3, 1}, {4, 1}, {0, 1}, {1, 1}, {2, 1}}, 3},
		{"rounds and a rest", 12, 3, 5, []call{{3, 3}, {4, 3}, {0, 2}, {1, 2}, {2, 2}}, 0},
		{"one device", 7, 0, 1, []call{{0, 7}}, 0},
		{"no devices", 7, 0, 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []call
			cursor := spread(tt.n, tt.cursor, tt.devices, func(i int, k uint64) { got = append(got, call{i, k}) })
			if !slices.Equal(got, tt.want) || cursor != tt.wantCursor {
				t.Errorf("spread(%d, %d, %d) gave %v, cursor %d; want %v, cursor %d",
					tt.n, tt.cursor, tt.devices, got, cursor, tt.want, tt.wantCursor)
			}
		})
	}
}

// TestSpreadIsFair checks the round-robin over many uneven ticks: every
// device gets the same number of readings, give or take one.
func TestSpreadIsFair(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, devices := range []int{1, 7, 100, 10000} {
		got := make([]uint64, devices)
		var total uint64
		cursor := 0
		for range 1000 {
			n := rng.Uint64N(uint64(3 * devices))
			total += n
			cursor = spread(n, cursor, devices, func(i int, k uint64) { got[i] += k })
		}
		var sum uint64
		for _, g := range got {
			sum += g
		}
		lo, hi := slices.Min(got), slices.Max(got)
		if sum != total || hi-lo > 1 {
			t.Errorf("%d devices: %d handed out of %d, per device %d to %d; want all, within one", devices, sum, total, lo, hi)
		}
	}
}

func TestOweSkipsBeyondBacklog(t *testing.T) {
	tests := []struct {
		name               string
		owed, k, backlog   int64
		wantOwed, wantSkip int64
	}{
		{"room", 0, 3, 10, 3, 0},
		{"fills up", 8, 2, 10, 10, 0},
		{"overflows", 8, 5, 10, 10, 3},
		{"full", 10, 4, 10, 10, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDevice(0, "us-east", TypeThermostat, 1, 1)
			d.owed.Store(tt.owed)
			skipped := d.owe(tt.k, tt.backlog)
			if d.owed.Load() != tt.wantOwed || skipped != tt.wantSkip {
				t.Errorf("owed %d + %d with backlog %d: owed %d, skipped %d; want %d, %d",
					tt.owed, tt.k, tt.backlog, d.owed.Load(), skipped, tt.wantOwed, tt.wantSkip)
			}
			select {
			case <-d.kick:
			default:
				t.Error("device not woken")
			}
		})
	}
}

func TestRampedElapsed(t *testing.T) {
	tests := []struct {
		elapsed, ramp, want time.Duration
	}{
		{time.Second, 0, time.Second},
		{0, 10 * time.Second, 0},
		{5 * time.Second, 10 * time.Second, 1250 * time.Millisecond}, // 25/20 s
		{10 * time.Second, 10 * time.Second, 5 * time.Second},        // half the ramp's readings
		{30 * time.Second, 10 * time.Second, 25 * time.Second},
	}
	for _, tt := range tests {
		if got := rampedElapsed(tt.elapsed, tt.ramp); got != tt.want {
			t.Errorf("rampedElapsed(%v, %v) = %v, want %v", tt.elapsed, tt.ramp, got, tt.want)
		}
	}
	// Continuous at the end of the ramp, and never decreasing.
	prev := time.Duration(-1)
	for e := time.Duration(0); e <= 20*time.Second; e += 10 * time.Millisecond {
		got := rampedElapsed(e, 10*time.Second)
		if got < prev {
			t.Fatalf("rampedElapsed decreases at %v: %v after %v", e, got, prev)
		}
		prev = got
	}
}
