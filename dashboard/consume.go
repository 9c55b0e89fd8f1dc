package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Streams and headers the dashboard reads; see the stream and ingest
// packages for what writes them.
const (
	readingsStream   = "READINGS"
	deadLetterStream = "DEADLETTER"
	reasonHeader     = "Telemetry-Reason"
)

const (
	// apiTimeout bounds one JetStream API request (create a consumer,
	// stream info), local or across the hub.
	apiTimeout = 5 * time.Second
	// probeInterval is how often a region's DEADLETTER is checked for
	// reachability once its consumer runs: how soon the page says that a
	// region is cut off.
	probeInterval = 2 * time.Second
	// maxReasonLen truncates reasons before they become label values.
	maxReasonLen = 64
)

// consumeReadings reads every region's readings from READINGS in the
// dashboard's domain, from now on, until ctx is done. Creating the consumer
// is retried (the stream may not exist yet); once it runs, the ordered
// consumer recreates itself after disconnects and resumes where it was.
func (d *Dashboard) consumeReadings(ctx context.Context, nc *nats.Conn) {
	js, err := jetstream.NewWithDomain(nc, d.cfg.Domain)
	if err != nil { // only for an invalid domain, which Validate rules out
		d.setReadingsErr(err.Error())
		return
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	handler := func(msg jetstream.Msg) { d.handleReading(time.Now(), msg.Subject(), msg.Data()) }
	onErr := func(_ jetstream.ConsumeContext, err error) {
		d.setReadingsErr(fmt.Sprintf("consuming %s: %v", readingsStream, err))
		d.log.Debug("READINGS consumer", "err", err)
	}
	cc := retry(ctx, func() (jetstream.ConsumeContext, error) {
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		cons, err := js.OrderedConsumer(cctx, readingsStream, cfg)
		if err == nil {
			var cc jetstream.ConsumeContext
			if cc, err = cons.Consume(handler, jetstream.ConsumeErrHandler(onErr)); err == nil {
				d.setReadingsErr("")
				d.log.Info("consuming readings", "stream", readingsStream, "domain", d.cfg.Domain)
				return cc, nil
			}
		}
		err = fmt.Errorf("waiting for stream %s in domain %s: %w", readingsStream, d.cfg.Domain, err)
		d.setReadingsErr(err.Error())
		return nil, err
	}, d.log)
	if cc == nil {
		return
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
}

// setReadingsErr records what is wrong with the READINGS consumer, "" for
// nothing.
func (d *Dashboard) setReadingsErr(s string) {
	if s == "" {
		d.readingsErr.Store(nil)
		return
	}
	d.readingsErr.Store(&s)
}

// handleReading aggregates one READINGS message that arrived at now.
func (d *Dashboard) handleReading(now time.Time, subject string, data []byte) {
	region, deviceType, device, ok := parseReadingSubject(subject)
	if !ok {
		d.agg.addUndecodable()
		d.m.undecodable.Inc()
		return
	}
	r, err := protocol.Unmarshal(data)
	if err != nil {
		d.agg.addUndecodable()
		d.m.undecodable.Inc()
		return
	}
	lat, known := d.agg.addReading(now, region, deviceType, device, r.TS, r.Metrics)
	if !known {
		d.m.other.Inc()
		return
	}
	d.m.readings[region].Inc()
	d.m.latency[region].Observe(lat.Seconds())
	if d.readingsErr.Load() != nil { // a message arrived: the consumer recovered
		d.readingsErr.Store(nil)
	}
}

// parseReadingSubject splits telemetry.<region>.<device-type>.<device-id>.
func parseReadingSubject(s string) (region, deviceType, device string, ok bool) {
	rest, ok := strings.CutPrefix(s, "telemetry.")
	if !ok {
		return "", "", "", false
	}
	region, rest, _ = strings.Cut(rest, ".")
	deviceType, device, _ = strings.Cut(rest, ".")
	if region == "" || deviceType == "" || device == "" || strings.Contains(device, ".") {
		return "", "", "", false
	}
	return region, deviceType, device, true
}

// consumeDeadLetters counts region's rejected payloads by reason, reading
// the headers of its DEADLETTER from the start, across domains. It keeps
// retrying while the region cannot be reached and probes the stream every
// probeInterval so the page can say whether the region is reachable.
func (d *Dashboard) consumeDeadLetters(ctx context.Context, nc *nats.Conn, region string) {
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		d.agg.setDeadLetterState(time.Now(), region, err.Error())
		return
	}
	handler := func(msg jetstream.Msg) {
		reason := reasonOf(msg.Headers(), msg.Subject())
		if counted := d.agg.addDeadLetter(region, reason); counted != "" {
			d.m.deadLetters.WithLabelValues(region, counted).Inc()
		}
	}
	onErr := func(_ jetstream.ConsumeContext, err error) {
		d.log.Debug("DEADLETTER consumer", "region", region, "err", err)
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: true}
	cc := retry(ctx, func() (jetstream.ConsumeContext, error) {
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		cons, err := js.OrderedConsumer(cctx, deadLetterStream, cfg)
		if err == nil {
			var cc jetstream.ConsumeContext
			if cc, err = cons.Consume(handler, jetstream.ConsumeErrHandler(onErr)); err == nil {
				d.agg.setDeadLetterState(time.Now(), region, "ok")
				return cc, nil
			}
		}
		d.agg.setDeadLetterState(time.Now(), region, unreachable(err))
		return nil, fmt.Errorf("reading %s of %s: %w", deadLetterStream, region, err)
	}, d.log)
	if cc == nil {
		return
	}
	defer func() {
		cc.Stop()
		<-cc.Closed()
	}()

	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_, err := js.Stream(pctx, deadLetterStream)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.agg.setDeadLetterState(time.Now(), region, unreachable(err))
		} else {
			d.agg.setDeadLetterState(time.Now(), region, "ok")
		}
	}
}

// reasonOf is the Telemetry-Reason header, or the last token of the
// subject deadletter.<region>.<reason>.
func reasonOf(h nats.Header, subject string) string {
	reason := h.Get(reasonHeader)
	if reason == "" {
		reason = subject[strings.LastIndexByte(subject, '.')+1:]
	}
	if reason == "" {
		reason = "unknown"
	}
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	return strings.Clone(reason)
}

func unreachable(err error) string {
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "no " + deadLetterStream + " stream"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "unreachable: no answer"
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return "unreachable: no route to region"
	default:
		return "unreachable: " + err.Error()
	}
}

// retry calls try until it succeeds or ctx is done, backing off
// exponentially with jitter from 0.5 s to 10 s, for as long as it takes. It
// logs the first failure and every change of error at Warn, and returns the
// zero value when ctx is done first.
func retry[T any](ctx context.Context, try func() (T, error), log *slog.Logger) T {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     500 * time.Millisecond,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         10 * time.Second,
	}
	var last string
	v, _ := backoff.Retry(ctx, try,
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // a region may be cut off for the whole talk
		backoff.WithNotify(func(err error, wait time.Duration) {
			if msg := err.Error(); msg != last {
				log.Warn("retrying", "err", err, "in", wait.Round(time.Millisecond))
				last = msg
			}
		}))
	return v // the zero value unless try succeeded
}
