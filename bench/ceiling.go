package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// ceiling runs fleet's configuration against a bare embedded broker (the
// demo's, started on a free loopback port) with one plain subscriber
// that acknowledges every message at once: the most readings per second
// the broker passes on with this fleet on this machine. With --batch the
// subscriber decodes each message to count its readings, as ingest would. It runs before
// the pipeline's arm, in the same run, so that both see the same machine.
func ceiling(ctx context.Context, cfg devices.Config, log *slog.Logger) (*CeilingReport, error) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxConnsPerIP: broker.DefaultMaxClients, FleetSecret: cfg.FleetSecret}, log)
	if err != nil {
		return nil, fmt.Errorf("ceiling: starting a bare broker: %w", err)
	}
	defer b.Close()

	cfg.Broker = b.URL()
	cfg.IDPrefix += "ceiling-"
	cfg.Boot = 0 // the fleet's own: now
	cfg.AckLatency = nil
	cfg.Chaos = 0

	var (
		mu       sync.Mutex
		received uint64
		last     time.Time
	)
	opts := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("telemetry-bench-ceiling").
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if i := strings.LastIndexByte(m.Topic(), '/'); i < 0 || !strings.HasPrefix(m.Topic()[i+1:], cfg.IDPrefix) {
				return
			}
			// A v2 message carries a batch: the ceiling is in readings.
			n := uint64(1)
			if cfg.Batch > 1 {
				if b, err := protocol.Unmarshal(m.Payload()); err == nil {
					n = uint64(len(b.Readings))
				}
			}
			mu.Lock()
			received += n
			last = time.Now()
			mu.Unlock()
		})
	sub := mqtt.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("ceiling: connecting the subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("telemetry/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("ceiling: subscribing: %v", tok.Error())
	}

	fleet, err := devices.New(cfg, log)
	if err != nil {
		return nil, err
	}
	defer fleet.Close()
	if err := fleet.Run(ctx); err != nil {
		return nil, fmt.Errorf("ceiling: running the fleet: %w", err)
	}
	st := fleet.Stats()
	// Every acknowledged reading reaches the subscriber within moments;
	// the wait is bounded in case one does not.
	_ = poll.Until(30*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if received < st.Acked {
			return fmt.Errorf("%d of %d received", received, st.Acked)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	c := &CeilingReport{Sent: st.Sent, Received: received}
	if !last.IsZero() {
		c.Seconds = last.Sub(fleet.PublishStart()).Seconds()
		c.Rate = float64(received) / c.Seconds
	}
	return c, nil
}
