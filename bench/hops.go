package bench

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Hop names: each is the latency from a reading's measurement (its ts, less
// its device's clock skew) to the point the name says. They are also the
// tags of the histogram log.
const (
	HopAck       = "ack"       // the broker's PUBACK reached the device (publish to PUBACK)
	HopIngest    = "ingest"    // ingest received it (received_ms in ClickHouse)
	HopJetStream = "jetstream" // stored in READINGS of the device's own region
	HopStored    = "stored"    // the row's stored_ms in ClickHouse
	HopFeed      = "feed"      // read from the home region's READINGS, as the dashboard reads it
)

// HopReplicated is the hop to READINGS of region, for readings of the
// other regions (replicated there).
func HopReplicated(region string) string { return "replicated-" + region }

// Histogram bounds, in microseconds: 1 µs to an hour at 3 significant
// digits. Every run uses the same, so that logs of runs (and of agents)
// merge.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

// Hops holds one latency histogram per hop, corrected for coordinated
// omission: a sample longer than the interval at which its device was due
// to publish also stands for the readings the device would have sent
// meanwhile (HdrHistogram's RecordCorrectedValue), so that a stall counts
// for every reading it held up, not once.
type Hops struct {
	// interval is a device's interval between readings, in µs; 0 records
	// without correction.
	interval int64

	mu         sync.Mutex
	start, end time.Time // of the first and the last record
	h          map[string]*hdrhistogram.Histogram
	count      map[string]uint64 // readings measured, before correction
	negative   map[string]uint64
}

// NewHops returns empty histograms corrected for devices publishing every
// interval (0: no correction).
func NewHops(interval time.Duration) *Hops {
	return &Hops{interval: interval.Microseconds(), h: map[string]*hdrhistogram.Histogram{},
		count: map[string]uint64{}, negative: map[string]uint64{}}
}

// Record adds one latency to hop. A negative value (clocks apart) counts
// as 0, and is counted.
func (hs *Hops) Record(hop string, d time.Duration) {
	us := d.Microseconds()
	now := time.Now()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.start.IsZero() {
		hs.start = now
	}
	hs.end = now
	h := hs.hist(hop)
	hs.count[hop]++
	if us < 0 {
		hs.negative[hop]++
	}
	us = min(max(us, histMin), histMax)
	if hs.interval > 0 {
		_ = h.RecordCorrectedValue(us, hs.interval) // in range: cannot fail
		return
	}
	_ = h.RecordValue(us)
}

func (hs *Hops) hist(hop string) *hdrhistogram.Histogram {
	h, ok := hs.h[hop]
	if !ok {
		h = hdrhistogram.New(histMin, histMax, histDigits)
		h.SetTag(hop)
		hs.h[hop] = h
	}
	return h
}

// Percentiles summarises one hop, in milliseconds.
type Percentiles struct {
	// Count is how many readings were measured; Corrected adds the
	// samples that stand for readings held up (coordinated omission).
	Count     uint64  `json:"count"`
	Corrected uint64  `json:"corrected_count"`
	Negative  uint64  `json:"negative"` // values below 0, counted as 0
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p99_9_ms"`
	Max       float64 `json:"max_ms"`
}

// Summary returns every hop's percentiles.
func (hs *Hops) Summary() map[string]Percentiles {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := map[string]Percentiles{}
	for hop, h := range hs.h {
		out[hop] = percentiles(h, hs.count[hop], hs.negative[hop])
	}
	return out
}

func percentiles(h *hdrhistogram.Histogram, count, negative uint64) Percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: count, Corrected: uint64(h.TotalCount()), Negative: negative,
		P50: ms(h.ValueAtQuantile(50)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
	}
}

// WriteLog writes every hop's histogram, tagged with the hop's name, in
// HdrHistogram's interval log format (version 1.3), which hdrhistogram-go,
// HdrHistogram's Java tools and HistogramLogAnalyzer read; histograms of
// the same tag in several logs merge (MergeLogs).
func (hs *Hops) WriteLog(w io.Writer) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	start, end := hs.start, hs.end
	lw := hdrhistogram.NewHistogramLogWriter(w)
	if err := lw.OutputLogFormatVersion(); err != nil {
		return fmt.Errorf("writing the histogram log: %w", err)
	}
	if err := lw.OutputComment("telemetry bench: latency per hop, microseconds, corrected for coordinated omission"); err != nil {
		return fmt.Errorf("writing the histogram log: %w", err)
	}
	if err := lw.OutputStartTime(start.UnixMilli()); err != nil {
		return fmt.Errorf("writing the histogram log: %w", err)
	}
	lw.SetBaseTime(start.UnixMilli())
	if err := lw.OutputLegend(); err != nil {
		return fmt.Errorf("writing the histogram log: %w", err)
	}
	hops := make([]string, 0, len(hs.h))
	for hop := range hs.h {
		hops = append(hops, hop)
	}
	sort.Strings(hops)
	for _, hop := range hops {
		h := hs.h[hop]
		h.SetStartTimeMs(start.UnixMilli())
		h.SetEndTimeMs(end.UnixMilli())
		if err := lw.OutputIntervalHistogram(h); err != nil {
			return fmt.Errorf("writing the histogram of %s: %w", hop, err)
		}
	}
	return nil
}

// MergeLogs reads histogram logs (WriteLog's, from several runs or
// agents) and merges the histograms of each tag.
func MergeLogs(logs ...io.Reader) (map[string]*hdrhistogram.Histogram, error) {
	out := map[string]*hdrhistogram.Histogram{}
	for i, r := range logs {
		lr := hdrhistogram.NewHistogramLogReader(r)
		for {
			h, err := lr.NextIntervalHistogram()
			if err != nil {
				return nil, fmt.Errorf("reading histogram log %d: %w", i+1, err)
			}
			if h == nil {
				break
			}
			m, ok := out[h.Tag()]
			if !ok {
				m = hdrhistogram.New(histMin, histMax, histDigits)
				m.SetTag(h.Tag())
				out[h.Tag()] = m
			}
			if dropped := m.Merge(h); dropped > 0 {
				return nil, fmt.Errorf("histogram log %d: %d values of %s out of range", i+1, dropped, h.Tag())
			}
		}
	}
	return out, nil
}

// WriteLogFile writes WriteLog's histograms to a new file at path.
func (hs *Hops) WriteLogFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("histogram log: %w", err)
	}
	if err := hs.WriteLog(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
