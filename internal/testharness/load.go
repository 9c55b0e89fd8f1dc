package testharness

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// LoadOptions says what a ReadingsLoad publishes.
type LoadOptions struct {
	// Region is the region whose READINGS subjects the readings go to:
	// telemetry.<Region>.<Prefix>.<device>.
	Region string
	// Prefix names the devices, <Prefix>-00, <Prefix>-01, ..., and is
	// their type in the subject. Lower-case letters, digits and dashes.
	Prefix string
	// Devices is how many devices take turns.
	Devices int
	// Rate is how many readings a second the devices publish in all.
	Rate int
	// Boot is every device's boot; default 1.
	Boot uint64
	// Metrics names the metrics of each reading; metric i of seq s has
	// the value s+i.
	Metrics []string
}

// Load is a load started by ReadingsLoad. Its methods may be called from
// any goroutine.
type Load struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	mu     sync.Mutex
	last   map[string]uint64 // per device, the last seq JetStream acknowledged
}

// ReadingsLoad publishes readings into READINGS through js at a steady
// rate, as ingest does (body the v1 payload, Nats-Msg-Id its identity),
// round robin over the devices, each with seq 1, 2, 3, ... It remembers
// each device's last seq that JetStream acknowledged, so that a test knows
// exactly what the stream holds. It runs until Stop or the end of the test;
// a failed publish ends it, and Stop fails the test.
func ReadingsLoad(t testing.TB, js jetstream.JetStream, opts LoadOptions) *Load {
	t.Helper()
	if opts.Region == "" || !protocol.ValidName(opts.Prefix) || opts.Devices <= 0 || opts.Rate <= 0 || len(opts.Metrics) == 0 {
		t.Fatalf("ReadingsLoad: want a region, a valid prefix, devices, a rate and metrics: %+v", opts)
	}
	if opts.Boot == 0 {
		opts.Boot = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel, done: make(chan error, 1), last: map[string]uint64{}}
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(opts.Rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				l.done <- nil
				return
			case <-tick.C:
			}
			if err := l.publish(js, opts, fmt.Sprintf("%s-%02d", opts.Prefix, i%opts.Devices)); err != nil {
				l.done <- err
				return
			}
		}
	}()
	t.Cleanup(func() { l.Stop(t) })
	return l
}

// publish publishes device's next reading and, once JetStream has
// acknowledged it, counts it.
func (l *Load) publish(js jetstream.JetStream, opts LoadOptions, device string) error {
	l.mu.Lock()
	seq := l.last[device] + 1
	l.mu.Unlock()
	r := protocol.Reading{Version: 1, Device: device, Boot: opts.Boot, Seq: seq, TS: time.Now().UnixMilli()}
	for i, m := range opts.Metrics {
		r.Metrics = append(r.Metrics, protocol.Metric{Name: m, Value: float64(seq) + float64(i)})
	}
	msg := nats.NewMsg(protocol.Topic{Region: opts.Region, DeviceType: opts.Prefix, Device: device}.Subject())
	msg.Data = protocol.AppendEncode(nil, r)
	msg.Header.Set(jetstream.MsgIDHeader, r.ID())
	// Not cancelled by Stop: a reading half published would be in the
	// stream but not counted.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publishing %s: %w", r.ID(), err)
	}
	l.mu.Lock()
	l.last[device] = seq
	l.mu.Unlock()
	return nil
}

// Sent is how many readings JetStream has acknowledged so far.
func (l *Load) Sent() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n uint64
	for _, s := range l.last {
		n += s
	}
	return n
}

// Last returns, per device, the last seq JetStream acknowledged: the
// stream holds seq 1 to that of each device.
func (l *Load) Last() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.last)
}

// Stop ends the load, failing the test if a publish failed, and returns
// how many readings JetStream acknowledged in all.
func (l *Load) Stop(t testing.TB) uint64 {
	t.Helper()
	l.once.Do(func() {
		l.cancel()
		if err := <-l.done; err != nil {
			t.Errorf("readings load: %v", err)
		}
	})
	return l.Sent()
}
