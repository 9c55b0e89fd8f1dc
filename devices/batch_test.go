package devices

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// batchMsg is a v2 message as the broker delivered it, decoded.
type batchMsg struct {
	topic protocol.Topic
	b     protocol.Batch
}

// decodeBatches decodes what c received, once per message (the broker
// may deliver one twice), and fails the test on anything Decode refuses
// or that is not v2.
func decodeBatches(t *testing.T, c *rawCollector) []batchMsg {
	t.Helper()
	seen := map[string]bool{}
	var out []batchMsg
	for _, m := range c.snapshot() {
		topic, b, err := protocol.Decode(m.topic, m.payload, time.Now(), protocol.Limits{})
		if err != nil {
			t.Fatalf("Decode(%s, %.200s): %v", m.topic, m.payload, err)
		}
		if b.Version != protocol.Version2 || topic.Device != b.Device {
			t.Fatalf("%s %.200s: version %d device %s, want a v2 batch of the topic's device", m.topic, m.payload, b.Version, b.Device)
		}
		if seen[b.ID()] {
			continue
		}
		seen[b.ID()] = true
		out = append(out, batchMsg{topic, b})
	}
	return out
}

// byBoot groups batches by device and boot, each group in seq order.
func byBoot(msgs []batchMsg) map[string]map[uint64][]protocol.Batch {
	out := map[string]map[uint64][]protocol.Batch{}
	for _, m := range msgs {
		if out[m.b.Device] == nil {
			out[m.b.Device] = map[uint64][]protocol.Batch{}
		}
		out[m.b.Device][m.b.Boot] = append(out[m.b.Device][m.b.Boot], m.b)
	}
	for _, boots := range out {
		for _, bs := range boots {
			slices.SortFunc(bs, func(a, b protocol.Batch) int { return int(a.First()) - int(b.First()) })
		}
	}
	return out
}

// readingsIn counts the readings of msgs.
func readingsIn(msgs []batchMsg) uint64 {
	var n uint64
	for _, m := range msgs {
		n += uint64(len(m.b.Readings))
	}
	return n
}

// TestFleetPublishesBatches runs a fleet with batches of 10 and reboots:
// every message is a v2 batch protocol.Decode accepts; a device's batches
// of a boot follow each other from seq 1 with no gap or overlap, every one
// full but the last, which went when the device rebooted or, for its last
// boot, when the run ended; and sent, acknowledged and the latency samples
// count readings.
func TestFleetPublishesBatches(t *testing.T) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	const total = 660 // 330/s for 2 s: 165 readings a device
	cfg := Config{
		Broker: broker, Devices: 4, Rate: 330, Duration: 2 * time.Second, Seed: 5, Boot: 1764100000,
		Batch: 10, Reboots: 0.02,
		// Batches go when full, on a reboot and at the end only, so that
		// their boundaries are known.
		BatchWait: MaxBatchWait,
	}
	f := runFleet(t, cfg)
	s := f.Stats()
	// Due readings beyond a device's backlog are skipped, should the
	// machine stall the run: they never get a seq, so every check below
	// holds all the same.
	if s.Sent+s.Skipped != total || s.Acked != s.Sent || s.InFlight != 0 || s.Batched != 0 || s.Errors != 0 || s.Reboots == 0 {
		t.Fatalf("stats %+v: want %d readings sent or skipped, all sent acknowledged, none in a batch, reboots", s, total)
	}

	sent := f.Sent()
	var want uint64
	for _, ds := range sent {
		want += ds.LastSeq
	}
	var msgs []batchMsg
	if err := poll.Until(10*time.Second, 10*time.Millisecond, func() error {
		if msgs = decodeBatches(t, c); readingsIn(msgs) < want {
			return fmt.Errorf("%d of %d readings received", readingsIn(msgs), want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want != s.Sent || readingsIn(msgs) != s.Sent || uint64(len(msgs)) != s.Messages {
		t.Errorf("%d readings in %d messages received, the ledger %d; stats %+v: want them all, once", readingsIn(msgs), len(msgs), want, s)
	}

	groups := byBoot(msgs)
	lastOf := map[string]uint64{} // device -> its last boot
	for _, ds := range sent {
		lastOf[ds.Device] = max(lastOf[ds.Device], ds.Boot)
	}
	var rebootPartials, endPartials int
	for _, ds := range sent {
		bs := groups[ds.Device][ds.Boot]
		if ds.Acked != ds.LastSeq || (ds.LastSeq == 0) != (len(bs) == 0) {
			t.Errorf("%+v: %d batches received; want every reading acknowledged and received", ds, len(bs))
			continue
		}
		next := uint64(1)
		for i, b := range bs {
			if b.First() != next {
				t.Errorf("%s boot %d: batch %d-%d after %d: a gap or an overlap", ds.Device, ds.Boot, b.First(), b.Last(), next-1)
			}
			next = b.Last() + 1
			if last := i == len(bs)-1; !last && len(b.Readings) != cfg.Batch || len(b.Readings) > cfg.Batch {
				t.Errorf("%s boot %d: batch %d of %d has %d readings, want %d but for the last", ds.Device, ds.Boot, i+1, len(bs), len(b.Readings), cfg.Batch)
			}
		}
		if len(bs) > 0 && bs[len(bs)-1].Last() != ds.LastSeq {
			t.Errorf("%s boot %d: batches end at seq %d, the ledger at %d", ds.Device, ds.Boot, bs[len(bs)-1].Last(), ds.LastSeq)
		}
		if len(bs) > 0 && len(bs[len(bs)-1].Readings) < cfg.Batch {
			if ds.Boot == lastOf[ds.Device] {
				endPartials++
			} else {
				rebootPartials++
			}
		}
	}
	// Both are drawn from the seed; a reboot before a multiple of 10
	// readings, and a run ending on one for all four devices, would be
	// chance.
	if rebootPartials == 0 || endPartials == 0 {
		t.Errorf("%d partial batches sent on a reboot, %d at the end: want some of each", rebootPartials, endPartials)
	}

	checkMetrics(t, f, map[string]float64{
		"telemetry_devices_published_total":     float64(s.Sent),
		"telemetry_devices_acked_total":         float64(s.Sent),
		"telemetry_devices_messages_total":      float64(len(msgs)),
		"telemetry_devices_batched":             0,
		"telemetry_devices_ack_latency_seconds": float64(s.Sent), // a sample per reading
	})
}

// TestFleetBatchLatencyPerReading: a batch's PUBACK gives one latency per
// reading, each from when the reading was measured, so the first readings
// of a batch show their wait for the last; the differences are those of
// the readings' ts.
func TestFleetBatchLatencyPerReading(t *testing.T) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	var (
		mu   sync.Mutex
		lats []time.Duration
	)
	cfg := Config{
		Broker: broker, Devices: 1, Rate: 100, Duration: time.Second, Boot: 1764100000,
		Batch: 10, BatchWait: MaxBatchWait,
		AckLatency: func(d time.Duration) {
			mu.Lock()
			lats = append(lats, d)
			mu.Unlock()
		},
	}
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := f.Stats()
	mu.Lock()
	defer mu.Unlock()
	if s.Sent == 0 || s.Acked != s.Sent || uint64(len(lats)) != s.Sent {
		t.Fatalf("stats %+v, %d latencies: want one per reading sent, all acknowledged", s, len(lats))
	}
	var msgs []batchMsg
	waitFor(t, 10*time.Second, "every reading", func() bool {
		msgs = decodeBatches(t, c)
		return readingsIn(msgs) >= s.Sent
	})
	// One device, no reordering: PUBACKs, and so the latencies, come in
	// the order of the batches.
	bs := byBoot(msgs)[f.Devices()[0].Device][cfg.Boot]
	i := 0
	for _, b := range bs {
		for k := 1; k < len(b.Readings); k++ {
			waited := lats[i+k-1] - lats[i+k]
			apart := time.Duration(b.Readings[k].TS-b.Readings[k-1].TS) * time.Millisecond
			if waited < 0 || (waited-apart).Abs() >= time.Millisecond {
				t.Errorf("batch %d-%d: readings %d and %d measured %v apart (their ts), their latencies %v and %v: want the earlier longer by as much",
					b.First(), b.Last(), b.Readings[k-1].Seq, b.Readings[k].Seq, apart, lats[i+k-1], lats[i+k])
			}
		}
		i += len(b.Readings)
	}
	if i != len(lats) {
		t.Errorf("%d readings in the batches, %d latencies", i, len(lats))
	}
}

// TestFleetSendsPartialBatchOnClose: readings in a partial batch are sent
// when the fleet is closed, not lost.
func TestFleetSendsPartialBatchOnClose(t *testing.T) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	f, err := New(Config{Broker: broker, Devices: 1, Rate: 100, Boot: 1764100000,
		Batch: protocol.MaxBatchReadings, BatchWait: MaxBatchWait}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Run(t.Context()) }()
	waitFor(t, 10*time.Second, "20 readings in the batch", func() bool { return f.Stats().Batched >= 20 })
	// 500 readings at 100/s take 5 s, the wait a minute: nothing is
	// published until the fleet stops.
	if s := f.Stats(); s.Sent != 0 || s.Messages != 0 {
		t.Fatalf("stats %+v: want nothing published before the batch is full", s)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Stats()
	if s.Sent < 20 || s.Acked != s.Sent || s.Messages != 1 || s.Batched != 0 || s.InFlight != 0 {
		t.Fatalf("stats after Close %+v: want the partial batch of 20 or more readings sent as one message and acknowledged", s)
	}
	var msgs []batchMsg
	waitFor(t, 10*time.Second, "the partial batch", func() bool {
		msgs = decodeBatches(t, c)
		return len(msgs) >= 1
	})
	if len(msgs) != 1 || msgs[0].b.First() != 1 || msgs[0].b.Last() != s.Sent {
		t.Errorf("%d messages received, the first %+v: want one batch of seqs 1 to %d", len(msgs), msgs[0].b, s.Sent)
	}
}

// TestFleetSendsWaitingBatches: a device whose batch fills slowly sends it
// once its first reading has waited BatchWait, so readings are not held
// back until the batch is full.
func TestFleetSendsWaitingBatches(t *testing.T) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	f, err := New(Config{Broker: broker, Devices: 2, Rate: 40, Boot: 1764100000,
		Batch: protocol.MaxBatchReadings, BatchWait: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() { errc <- f.Run(t.Context()) }()
	// Without the wait, the first batch would take 500 readings at 20/s a
	// device: 25 s.
	waitFor(t, 10*time.Second, "60 acknowledged readings", func() bool { return f.Stats().Acked >= 60 })
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Stats()
	if s.Acked != s.Sent || s.Messages < 4 || s.Batched != 0 {
		t.Fatalf("stats %+v: want everything acknowledged, in 4 or more messages", s)
	}
	var msgs []batchMsg
	waitFor(t, 10*time.Second, "every reading", func() bool {
		msgs = decodeBatches(t, c)
		return readingsIn(msgs) >= s.Sent
	})
	for dev, boots := range byBoot(msgs) {
		for boot, bs := range boots {
			next := uint64(1)
			for _, b := range bs {
				if b.First() != next || len(b.Readings) >= protocol.MaxBatchReadings {
					t.Errorf("%s boot %d: batch %d-%d after %d: want the next seqs, fewer than a full batch", dev, boot, b.First(), b.Last(), next-1)
				}
				next = b.Last() + 1
			}
		}
	}
	if uint64(len(msgs)) != s.Messages {
		t.Errorf("%d messages received, %d sent", len(msgs), s.Messages)
	}
}

// namesSensor reports two metrics whose names change every three
// readings: a, then b.
type namesSensor struct{ n int }

func (s *namesSensor) read(dst []protocol.Metric, _ time.Time) []protocol.Metric {
	p := [2]string{"a", "b"}[s.n/3%2]
	s.n++
	return append(dst, protocol.Metric{Name: p + "_x", Value: float64(s.n)}, protocol.Metric{Name: p + "_y", Value: 1})
}

// namesOf is the names namesSensor gives reading seq.
func namesOf(seq uint64) []string {
	p := [2]string{"a", "b"}[(seq-1)/3%2]
	return []string{p + "_x", p + "_y"}
}

// TestFleetSplitsBatchesWhereNamesChange: a batch has one list of metric
// names, so a reading with other names than the batch in hand sends the
// batch first.
func TestFleetSplitsBatchesWhereNamesChange(t *testing.T) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	f, err := New(Config{Broker: broker, Devices: 1, Rate: 60, Duration: time.Second, Boot: 1764100000,
		Batch: 10, BatchWait: MaxBatchWait}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.devices[0].sensor = &namesSensor{}
	if err := f.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := f.Stats()
	if s.Sent+s.Skipped != 60 || s.Acked != s.Sent || s.Batched != 0 {
		t.Fatalf("stats %+v: want 60 readings sent or skipped, all acknowledged", s)
	}
	var msgs []batchMsg
	waitFor(t, 10*time.Second, "every reading", func() bool {
		msgs = decodeBatches(t, c)
		return readingsIn(msgs) >= s.Sent
	})
	next := uint64(1)
	for _, b := range byBoot(msgs)[f.Devices()[0].Device][1764100000] {
		if b.First() != next {
			t.Errorf("batch %d-%d after %d", b.First(), b.Last(), next-1)
		}
		next = b.Last() + 1
		for _, r := range b.Readings {
			var got []string
			for _, m := range r.Metrics {
				got = append(got, m.Name)
			}
			if want := namesOf(r.Seq); !slices.Equal(got, want) {
				t.Errorf("batch %d-%d: reading %d named %v, want %v", b.First(), b.Last(), r.Seq, got, want)
			}
		}
	}
	if next-1 != s.Sent {
		t.Errorf("batches end at seq %d, %d sent", next-1, s.Sent)
	}
	// Without skips, every batch holds the three readings of one run of
	// names; with them (a stalled machine) fewer.
	if s.Skipped == 0 && (s.Messages != 20 || uint64(len(msgs)) != 20) {
		t.Errorf("%d messages sent, %d received: want 20, 3 readings each", s.Messages, len(msgs))
	}
}

// TestConfigBatch checks the bounds of Config.Batch: at most
// protocol.MaxBatchReadings, and a batch of a type's largest readings
// within protocol.MaxBatchBytes; errors name the flag.
func TestConfigBatch(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"v1", Config{Batch: 1}, ""},
		{"the most readings, every type", Config{Batch: protocol.MaxBatchReadings}, ""},
		{"one too many", Config{Batch: protocol.MaxBatchReadings + 1}, "batch 501: want 1 (protocol v1, a message per reading) to 500 readings per protocol v2 message (--batch)"},
		{"negative", Config{Batch: -1}, "--batch"},
		{"wait negative", Config{Batch: 10, BatchWait: -time.Second}, "batch wait -1s"},
		{"wait too long", Config{Batch: 10, BatchWait: MaxBatchWait + time.Second}, "batch wait"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}

	// A type with 32 metrics of long names fits fewer readings in 64 KiB.
	var wide []string
	for k := range protocol.MaxMetrics {
		wide = append(wide, fmt.Sprintf("metric_with_a_long_name_%02d", k))
	}
	metricsOf := func(typ string) []string {
		if typ == "wide" {
			return wide
		}
		return typeMetrics(typ)
	}
	most := 1
	for maxBatchBytes(wide, most+1) <= protocol.MaxBatchBytes {
		most++
	}
	if most >= protocol.MaxBatchReadings || most < 2 {
		t.Fatalf("a batch of 32 metrics fits %d readings: the test needs fewer than %d", most, protocol.MaxBatchReadings)
	}
	if err := checkBatch(most, []string{TypeThermostat, "wide"}, metricsOf); err != nil {
		t.Errorf("batch %d of the wide type: %v, want it accepted", most, err)
	}
	err := checkBatch(most+1, []string{TypeThermostat, "wide"}, metricsOf)
	if want := fmt.Sprintf("over the protocol's 65536 (--batch %d at most)", most); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "wide readings") {
		t.Errorf("batch %d of the wide type: %v, want an error naming the type and %q", most+1, err, want)
	}
}

// TestMaxBatchBytesIsTheLongest: maxBatchBytes is the size of a batch of
// the longest values protocol.AppendEncodeBatch writes.
func TestMaxBatchBytesIsTheLongest(t *testing.T) {
	for _, typ := range Types() {
		names := typeMetrics(typ)
		for _, n := range []int{1, 2, protocol.MaxBatchReadings} {
			rs := make([]protocol.Reading, n)
			for i := range rs {
				ms := make([]protocol.Metric, len(names))
				for k, name := range names {
					// The longest shortest form of a float64.
					ms[k] = protocol.Metric{Name: name, Value: -2.2250738585072014e-308}
				}
				rs[i] = protocol.Reading{Device: strings.Repeat("d", maxDeviceID), Boot: math.MaxUint64,
					Seq: math.MaxUint64, TS: math.MinInt64, Metrics: ms}
			}
			if got, want := len(protocol.AppendEncodeBatch(nil, rs)), maxBatchBytes(names, n); got != want {
				t.Errorf("%s, %d readings: the longest encoding is %d bytes, maxBatchBytes says %d", typ, n, got, want)
			}
		}
	}
}

func TestReadingsPerMessage(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 1},
		{Config{Batch: 1, Devices: 10, Rate: 10000}, 1},
		{Config{Batch: 100, Devices: 10, Rate: 10000}, 100}, // 1,000/s a device: full long before a second
		{Config{Batch: 100, Devices: 10, Rate: 100}, 11},    // 10/s a device: 11 in the second's wait
		{Config{Batch: 100, Devices: 1000, Rate: 100}, 1},   // one every 10 s
		{Config{Batch: 100, Devices: 10, Rate: 100, BatchWait: 3 * time.Second}, 31},
	} {
		if got := tt.cfg.ReadingsPerMessage(); got != tt.want {
			t.Errorf("%+v: %d readings a message, want %d", tt.cfg, got, tt.want)
		}
	}
}

// runFleet runs a fleet of cfg to its end, within a minute, and closes it
// when the test ends.
func runFleet(t *testing.T, cfg Config) *Fleet {
	t.Helper()
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}
