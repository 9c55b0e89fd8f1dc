package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// A v2 batch counts as its readings, each with its own value and
// latency, beside v1 readings.
func TestSnapshotCountsTheReadingsOfABatch(t *testing.T) {
	url, js, _ := startRegion(t)
	_, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", PushInterval: 50 * time.Millisecond})
	waitConsuming(t, base)

	now := time.Now()
	rs := make([]protocol.Reading, 40)
	for i := range rs {
		rs[i] = protocol.Reading{Device: "th-b", Boot: 1, Seq: uint64(i + 1), TS: now.Add(-300 * time.Millisecond).UnixMilli(),
			Metrics: []protocol.Metric{{Name: "temperature_c", Value: float64(i)}}}
	}
	publish(t, js, &nats.Msg{Subject: "telemetry.us-east.th.th-b", Data: protocol.AppendEncodeBatch(nil, rs),
		Header: nats.Header{"Nats-Msg-Id": []string{"th-b:1:1-40"}}})
	publishReading(t, js, "us-east", "th-1", 1, 100, 300*time.Millisecond)

	waitFor(t, 10*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		us := s.Regions[0]
		if us.Total != 41 || us.ActiveDevices != 2 || us.Latency.Samples != 41 {
			return fmt.Errorf("us-east total %d, active %d, latency samples %d; want 41, 2, 41", us.Total, us.ActiveDevices, us.Latency.Samples)
		}
		if len(us.Metrics) != 1 || us.Metrics[0].Count != 41 || us.Metrics[0].Min != 0 || us.Metrics[0].Max != 100 {
			return fmt.Errorf("us-east metrics %+v, want temperature_c 41 values 0..100", us.Metrics)
		}
		if us.Latency.P50 < 300 {
			return fmt.Errorf("us-east latency p50 %v ms, want at least the 300 ms the readings were backdated", us.Latency.P50)
		}
		return nil
	})
}
