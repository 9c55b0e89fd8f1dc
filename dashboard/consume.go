package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
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

// readingsSite is a region whose READINGS the dashboard can follow.
type readingsSite struct {
	region, url string
	nc          *nats.Conn // nil until first needed; the home one is Run's
}

// consumeReadings reads every region's readings from READINGS, live (from
// now on), until ctx is done: from the dashboard's own region, or, once
// that has been unusable for FailoverAfter, from the first of
// Config.Fallbacks that answers, moving back home once home has answered
// again for FailoverAfter. Each move starts a new ordered consumer that
// delivers new readings only: the page is a live view, so the readings
// that arrived during the FailoverAfter before a move are not counted
// (storage, not the page, keeps every reading). Within one region, the
// ordered consumer recreates itself after a disconnect and resumes where
// it was.
func (d *Dashboard) consumeReadings(ctx context.Context, nc *nats.Conn) {
	sites := []*readingsSite{{region: d.cfg.Domain, url: d.cfg.NATSURL, nc: nc}}
	for _, f := range d.cfg.Fallbacks {
		sites = append(sites, &readingsSite{region: f.Region, url: f.NATSURL})
	}
	defer func() {
		for _, s := range sites[1:] {
			if s.nc != nil {
				s.nc.Close()
			}
		}
	}()
	home, cur := sites[0], sites[0]
	d.setFeed(cur.region, cur.nc)

	var (
		cc          jetstream.ConsumeContext
		downSince   time.Time
		homeUpSince time.Time
	)
	stop := func() {
		if cc != nil {
			cc.Stop()
			<-cc.Closed()
			cc = nil
		}
	}
	defer stop()
	moveTo := func(s *readingsSite, why string) {
		stop()
		d.log.Warn("reading from another region", "from", cur.region, "to", s.region, "why", why)
		cur, downSince, homeUpSince = s, time.Time{}, time.Time{}
		d.setFeed(cur.region, cur.nc)
		d.m.failovers.Inc()
	}
	tick := time.NewTicker(min(max(d.cfg.FailoverAfter/4, 100*time.Millisecond), probeInterval))
	defer tick.Stop()
	for {
		if cc == nil && cur.nc.IsConnected() {
			var err error
			if cc, err = d.startReadings(ctx, cur); err != nil {
				d.setReadingsErr(err.Error())
			}
		}
		now := time.Now()
		if cc != nil && cur.nc.IsConnected() {
			downSince = time.Time{}
			if cur != home {
				if d.probeReadings(ctx, home) != nil {
					homeUpSince = time.Time{}
				} else if homeUpSince.IsZero() {
					homeUpSince = now
				} else if now.Sub(homeUpSince) >= d.cfg.FailoverAfter {
					moveTo(home, "home region answers again")
					continue
				}
			}
		} else {
			if downSince.IsZero() {
				downSince = now
			}
			if len(sites) > 1 && now.Sub(downSince) >= d.cfg.FailoverAfter {
				moved := false
				i := slices.Index(sites, cur)
				for k := 1; k < len(sites); k++ {
					next := sites[(i+k)%len(sites)]
					if err := d.probeReadings(ctx, next); err != nil {
						d.log.Debug("cannot read from region", "region", next.region, "err", err)
						continue
					}
					moveTo(next, fmt.Sprintf("%s unusable for %s", cur.region, now.Sub(downSince).Round(time.Millisecond)))
					moved = true
					break
				}
				if moved {
					continue // start reading there at once
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// startReadings starts an ordered consumer of new readings on s's READINGS.
func (d *Dashboard) startReadings(ctx context.Context, s *readingsSite) (jetstream.ConsumeContext, error) {
	js, err := jetstream.NewWithDomain(s.nc, s.region)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	cons, err := js.OrderedConsumer(cctx, readingsStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("waiting for stream %s in domain %s: %w", readingsStream, s.region, err)
	}
	handler := func(msg jetstream.Msg) { d.handleReading(time.Now(), msg.Subject(), msg.Data()) }
	onErr := func(_ jetstream.ConsumeContext, err error) {
		d.setReadingsErr(fmt.Sprintf("consuming %s in %s: %v", readingsStream, s.region, err))
		d.log.Debug("READINGS consumer", "region", s.region, "err", err)
	}
	cc, err := cons.Consume(handler, jetstream.ConsumeErrHandler(onErr))
	if err != nil {
		return nil, fmt.Errorf("consuming %s in domain %s: %w", readingsStream, s.region, err)
	}
	d.setReadingsErr("")
	d.log.Info("consuming readings", "stream", readingsStream, "domain", s.region)
	return cc, nil
}

// probeReadings connects to s if need be and asks for its READINGS.
func (d *Dashboard) probeReadings(ctx context.Context, s *readingsSite) error {
	if s.nc == nil {
		// Connect before reconnecting forever: a region that never
		// answered is tried again at the next probe.
		nc, err := nats.Connect(s.url,
			nats.Name("telemetry-dashboard"),
			nats.Timeout(min(d.cfg.FailoverAfter, apiTimeout)),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(time.Second),
		)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", s.region, err)
		}
		s.nc = nc
	}
	if !s.nc.IsConnected() {
		return fmt.Errorf("%s: not connected", s.region)
	}
	js, err := jetstream.NewWithDomain(s.nc, s.region)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, min(d.cfg.FailoverAfter, apiTimeout))
	defer cancel()
	_, err = js.Stream(pctx, readingsStream)
	return err
}

// feedSite is the region whose READINGS the dashboard reads, and the
// connection to its server, through which every region's DEADLETTER is read
// too: at home, the dashboard's own connection; failed over, the
// fallback's.
type feedSite struct {
	region string
	nc     *nats.Conn
	// moved is closed when the dashboard reads from another region.
	moved chan struct{}
}

// setFeed records that READINGS is read from region through nc, and tells
// the dead-letter consumers if that is a move.
func (d *Dashboard) setFeed(region string, nc *nats.Conn) {
	d.feedMu.Lock()
	defer d.feedMu.Unlock()
	old := d.feedCur.Load()
	if old != nil && old.region == region && old.nc == nc {
		return
	}
	d.feedCur.Store(&feedSite{region: region, nc: nc, moved: make(chan struct{})})
	if old != nil {
		close(old.moved)
	}
}

// feed is the region READINGS is read from.
func (d *Dashboard) feed() string {
	if f := d.feedCur.Load(); f != nil {
		return f.region
	}
	return d.cfg.Domain
}

// feedConn is the connection READINGS is read through; nil before Run.
func (d *Dashboard) feedConn() *nats.Conn {
	if f := d.feedCur.Load(); f != nil {
		return f.nc
	}
	return nil
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

// handleReading aggregates the readings of one READINGS message (one, or
// a v2 batch's) that arrived at now.
func (d *Dashboard) handleReading(now time.Time, subject string, data []byte) {
	topic, err := protocol.ParseSubject(subject)
	if err != nil {
		d.agg.addUndecodable()
		d.m.undecodable.Inc()
		return
	}
	region, deviceType, device := topic.Region, topic.DeviceType, topic.Device
	b, err := protocol.Unmarshal(data)
	if err != nil {
		d.agg.addUndecodable()
		d.m.undecodable.Inc()
		return
	}
	for _, r := range b.Readings {
		lat, known := d.agg.addReading(now, region, deviceType, device, r.TS, r.Metrics)
		if !known {
			d.m.other.Inc()
			continue
		}
		d.m.readings[region].Inc()
		d.m.latency[region].Observe(lat.Seconds())
	}
	if d.readingsErr.Load() != nil { // a message arrived: the consumer recovered
		d.readingsErr.Store(nil)
	}
}

// consumeDeadLetters counts region's rejected payloads by reason, reading
// the headers of its DEADLETTER from the start, across domains, until ctx
// is done. It reads through the connection READINGS is read through (see
// feed): a region's DEADLETTER lives only in its own domain, which the
// hub makes reachable from any region's server. When the dashboard reads
// from another region, it starts a new consumer there at the stream
// sequence after the last dead letter counted, so none is counted twice
// or skipped (the sequence is the stream's own, the same through any
// server).
func (d *Dashboard) consumeDeadLetters(ctx context.Context, region string) {
	var next atomic.Uint64 // stream sequence of the next dead letter to count; 0 before the first
	for ctx.Err() == nil {
		f := d.feedCur.Load()
		fctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-f.moved:
				cancel()
			case <-fctx.Done():
			}
		}()
		if f.region != d.cfg.Domain {
			d.log.Info("reading dead letters through another region", "region", region, "through", f.region, "from_seq", next.Load())
		}
		d.readDeadLetters(fctx, f, region, &next)
		cancel()
	}
}

// readDeadLetters counts region's dead letters through f's connection,
// from stream sequence next on, until ctx is done, probing the stream
// every probeInterval so the page can say whether the region is reachable.
// It keeps retrying while the region cannot be reached.
func (d *Dashboard) readDeadLetters(ctx context.Context, f *feedSite, region string, next *atomic.Uint64) {
	js, err := jetstream.NewWithDomain(f.nc, region)
	if err != nil {
		d.agg.setDeadLetterState(time.Now(), region, err.Error())
		<-ctx.Done()
		return
	}
	handler := func(msg jetstream.Msg) {
		if meta, err := msg.Metadata(); err == nil {
			if meta.Sequence.Stream < next.Load() {
				return // counted already, through another region
			}
			next.Store(meta.Sequence.Stream + 1)
		}
		reason := reasonOf(msg.Headers(), msg.Subject())
		if counted := d.agg.addDeadLetter(region, reason); counted != "" {
			d.m.deadLetters.WithLabelValues(region, counted).Inc()
		}
	}
	onErr := func(_ jetstream.ConsumeContext, err error) {
		d.log.Debug("DEADLETTER consumer", "region", region, "through", f.region, "err", err)
	}
	cc := retry(ctx, func() (jetstream.ConsumeContext, error) {
		cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: true}
		if n := next.Load(); n > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, n
		}
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
		if ctx.Err() == nil {
			d.agg.setDeadLetterState(time.Now(), region, unreachable(err))
		}
		return nil, fmt.Errorf("reading %s of %s through %s: %w", deadLetterStream, region, f.region, err)
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
	reason := h.Get(protocol.HeaderReason)
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
