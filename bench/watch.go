package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/redact"
	"github.com/telemetry-demo/telemetry/stream"
)

// connectRegion dials region's NATS at url, for its domain's JetStream.
func connectRegion(region, url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS of %s at %s: %w", region, redact.URL(url), err)
	}
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// readingsWatcher reads one region's READINGS from now on and times the
// run's readings: to the region's own stream (readings of the region), to
// the region as a copy (readings of the others), and, in the home region,
// to their arrival at a consumer such as the dashboard's.
type readingsWatcher struct {
	region string
	home   bool
	nc     *nats.Conn
	cc     jetstream.ConsumeContext
}

// watchReadings starts a watcher of region's READINGS. The run's readings
// are those of devices whose id starts with prefix, with a boot of run or
// later; skews are the devices' clock skews in milliseconds.
func watchReadings(ctx context.Context, region, url string, home bool, prefix string, run uint64, skews map[string]int64, hops *Hops, log *slog.Logger) (*readingsWatcher, error) {
	nc, js, err := connectRegion(region, url, "telemetry-bench-readings-"+region)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, stream.ReadingsStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading %s in %s: %w (is the topology applied?)", stream.ReadingsStream, region, err)
	}
	w := &readingsWatcher{region: region, home: home, nc: nc}
	w.cc, err = cons.Consume(func(m jetstream.Msg) {
		arrived := time.Now()
		b, err := protocol.Unmarshal(m.Data())
		if err != nil || !strings.HasPrefix(b.Device, prefix) || b.Boot < run {
			return
		}
		md, mdErr := m.Metadata()
		hop := HopReplicated(region)
		if t, err := protocol.ParseSubject(m.Subject()); err == nil && t.Region == region {
			hop = HopJetStream
		}
		// Each reading of a batch has its own latency, from when it was
		// measured.
		for _, r := range b.Readings {
			measured := time.UnixMilli(r.TS - skews[r.Device])
			if mdErr == nil {
				hops.Record(hop, md.Timestamp.Sub(measured))
			}
			if home {
				hops.Record(HopFeed, arrived.Sub(measured))
			}
		}
	}, jetstream.PullMaxMessages(4096), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Debug("readings watcher", "region", region, "err", err)
	}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

func (w *readingsWatcher) close() {
	w.cc.Stop()
	w.nc.Close()
}

// deadLetters reads one region's DEADLETTER stream from a start time on,
// keeping what it has read between polls.
type deadLetters struct {
	region   string
	run      uint64 // hostile messages of other runs are ignored
	nc       *nats.Conn
	js       jetstream.JetStream
	cons     jetstream.Consumer
	hostile  map[devices.ChaosMarker]deadLetter // first dead letter of each hostile message
	byReason map[string]uint64                  // this run's dead letters (hostile and readings), by reason
	others   []deadLetter                       // dead letters without a marker of any run
	lastSeq  uint64
}

type deadLetter struct {
	reason, detail string
	batch          protocol.Batch // when the body decodes
	decoded        bool
}

func openDeadLetters(ctx context.Context, region, url string, run uint64, since time.Time) (*deadLetters, error) {
	nc, js, err := connectRegion(region, url, "telemetry-bench-deadletters-"+region)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, stream.DeadLetterStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading %s in %s: %w (is the topology applied?)", stream.DeadLetterStream, region, err)
	}
	return &deadLetters{region: region, run: run, nc: nc, js: js, cons: cons,
		hostile: map[devices.ChaosMarker]deadLetter{}, byReason: map[string]uint64{}}, nil
}

func (d *deadLetters) close() { d.nc.Close() }

// poll reads what the stream gained since the last poll.
func (d *deadLetters) poll(ctx context.Context) error {
	s, err := d.js.Stream(ctx, stream.DeadLetterStream)
	if err != nil {
		return fmt.Errorf("dead letters of %s: %w", d.region, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("dead letters of %s: %w", d.region, err)
	}
	target := info.State.LastSeq
	for d.lastSeq < target {
		batch, err := d.cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("dead letters of %s: %w", d.region, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				d.lastSeq = md.Sequence.Stream
			}
			d.add(m)
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return fmt.Errorf("dead letters of %s: %w", d.region, batch.Error())
		}
		if n == 0 {
			break // nothing more since the start time
		}
	}
	return nil
}

func (d *deadLetters) add(m jetstream.Msg) {
	h := m.Headers()
	dl := deadLetter{reason: h.Get(protocol.HeaderReason), detail: h.Get(protocol.HeaderDetail)}
	if mk, ok := devices.FindChaosMarker(m.Data()); ok {
		if mk.Run != d.run {
			return // another fleet's
		}
		if _, seen := d.hostile[mk]; !seen {
			d.hostile[mk] = dl
			d.byReason[dl.reason]++ // counted once per message however often delivered
		}
		return
	}
	if b, err := protocol.Unmarshal(m.Data()); err == nil {
		dl.batch, dl.decoded = b, true
	}
	d.others = append(d.others, dl)
}

// rejectedReadings counts, by reason, the readings in dead letters of the
// run's devices and boots (every reading of a batch): valid readings the
// pipeline refused.
func (d *deadLetters) rejectedReadings(prefix string, boots map[uint64]bool) map[string]uint64 {
	out := map[string]uint64{}
	for _, dl := range d.others {
		if dl.decoded && strings.HasPrefix(dl.batch.Device, prefix) && boots[dl.batch.Boot] {
			out[dl.reason] += uint64(len(dl.batch.Readings))
			d.byReason[dl.reason]++
		}
	}
	return out
}
