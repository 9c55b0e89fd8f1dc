package stream

import (
	"fmt"
	"time"

	"github.com/telemetry-demo/telemetry/internal/disk"
)

// ReadingBytes is about what one reading takes in a region's READINGS
// store: the v1 payload (about 230 bytes), its subject, the Nats-Msg-Id and
// Telemetry-Received headers, the Nats-Stream-Source header of a sourced
// reading, and the store's own framing. Measured on the demo's fleet: a
// region's store grew by 371 bytes per reading of the whole fleet
// (docs/BENCH.md, "Long runs").
const ReadingBytes = 371

// minBudget is the smallest READINGS byte limit a topology accepts: below
// it the buffer holds less than a second of a load test.
const minBudget = 1 << 20

// Budget is what the streams may take on disk, and for how long READINGS
// holds what storage has not stored yet.
type Budget struct {
	Regions int
	// ReadingsBytes and DeadLetterBytes are each region's limits.
	ReadingsBytes, DeadLetterBytes int64
}

// Budget returns the topology's disk budget.
func (t Topology) Budget() Budget {
	return Budget{Regions: len(t.Regions), ReadingsBytes: t.ReadingsMaxBytes, DeadLetterBytes: t.DeadLetterMaxBytes}
}

// Disk is the most the streams of every region take together, as when
// they all run on one machine (the demo).
func (b Budget) Disk() int64 {
	return int64(b.Regions) * (b.ReadingsBytes + b.DeadLetterBytes)
}

// Holds is how long READINGS in a region buffers readings arriving at rate
// per second across the whole fleet (every region holds every region's):
// how long storage may be away before the oldest readings it has not
// stored make room for new ones.
func (b Budget) Holds(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(b.ReadingsBytes) / (rate * ReadingBytes) * float64(time.Second))
}

// Describe says the budget in a line for a person: the limits, the disk
// they take, and how long the buffer lasts at each rate.
func (b Budget) Describe(rates ...float64) string {
	s := fmt.Sprintf("READINGS keeps up to %s per region (DEADLETTER %s), %s on disk for %d regions",
		FormatBytes(b.ReadingsBytes), FormatBytes(b.DeadLetterBytes), FormatBytes(b.Disk()), b.Regions)
	for i, r := range rates {
		sep := "; "
		if i > 0 {
			sep = ", "
		}
		s += fmt.Sprintf("%sat %.0f readings/s it holds %s", sep, r, roundHolds(b.Holds(r)))
	}
	return s
}

func roundHolds(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	case d >= time.Minute:
		return fmt.Sprintf("%.0f min", d.Minutes())
	default:
		return d.Round(time.Second).String()
	}
}

// FormatBytes writes n in binary units, e.g. "1.0 GiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Check returns an error when the disk under dir has less room than the
// budget (Disk), or its room cannot be told.
func (b Budget) Check(dir string) error {
	free, err := disk.Free(dir)
	if err != nil {
		return fmt.Errorf("cannot tell the free disk under %s: %w", dir, err)
	}
	if free < uint64(b.Disk()) {
		return fmt.Errorf("%s free under %s, less than the streams' budget of %s", FormatBytes(int64(free)), dir, FormatBytes(b.Disk()))
	}
	return nil
}
