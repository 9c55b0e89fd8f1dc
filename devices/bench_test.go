package devices

import (
	"fmt"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// BenchmarkGenerate measures what a device does per reading before the
// MQTT client: the sensor model and the encoding into a reused buffer, v1
// (a message per reading) and v2 (batches of 100).
func BenchmarkGenerate(b *testing.B) {
	for _, batch := range []int{1, 100} {
		for _, typ := range Types() {
			b.Run(fmt.Sprintf("%s/batch-%d", typ, batch), func(b *testing.B) {
				d := newDevice(41, "eu-west", typ, 1764100000, 1)
				now := time.Now()
				buf := make([]byte, 0, 256*batch)
				b.ReportAllocs()
				start := time.Now()
				for i := 0; b.Loop(); i++ {
					at := now.Add(time.Duration(i) * time.Millisecond)
					d.read(at)
					d.add(at, protocol.Version2)
					if len(d.batch) == batch {
						buf = d.encodeBatch(buf[:0], batch > 1)
						d.cur.last.Add(uint64(batch))
						d.resetBatch()
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "readings/s")
				b.SetBytes(int64(len(buf) / batch))
			})
		}
	}
}

// BenchmarkSpread measures the scheduler's hand-out over 10,000 devices, at
// 100 readings per tick (10,000/s with 10 ms ticks).
func BenchmarkSpread(b *testing.B) {
	f, err := New(Config{Devices: 10000}, nil)
	if err != nil {
		b.Fatal(err)
	}
	cursor := 0
	b.ReportAllocs()
	for b.Loop() {
		cursor = spread(100, cursor, len(f.devices), f.owe)
	}
}

// BenchmarkChaos measures building a hostile message (Config.Chaos), the
// cases taken in turn.
func BenchmarkChaos(b *testing.B) {
	f := &Fleet{cfg: Config{Seed: 1, Boot: 1764100000123456789}.withDefaults()}
	d := newDeviceWith("bench-", 41, "eu-west", TypeThermostat, 1764100000, 1)
	now := time.Now()
	buf := make([]byte, 0, 1<<17)
	b.ReportAllocs()
	start := time.Now()
	for i := uint64(1); b.Loop(); i++ {
		_, buf = f.chaos(buf[:0], d, i, now)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "messages/s")
}
