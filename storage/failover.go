package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/redact"
)

// Failover: when the region the writer consumes from has been unusable
// for FailoverAfter, the writer consumes from the next region of
// Config.Fallbacks that answers, and moves back to its home region once
// that has answered again for FailoverAfter.
//
// Stream sequences differ between regions, so the writer cannot carry its
// position over. It carries a time instead. Readings of one origin region
// appear in every region's READINGS in the same order (sources keep it),
// and the writer stores them in that order, so what it has stored of each
// origin is a prefix of that origin's readings. Its watermark per origin is
// the latest Telemetry-Received (ingest's clock) it stored. The first
// reading not stored yet was received no earlier than that watermark, less
// how far ingest may reorder, and was stored in any region's stream after it
// was received. So a consumer that starts at the smallest watermark less
// Config.FailoverMargin (DeliverByStartTime) skips nothing. The readings in
// the overlap, those received no later than their origin's watermark, are
// looked up in ClickHouse before insertion (as redeliveries are), so none is
// inserted twice.
//
// The watermark is kept in memory as readings are stored; for an origin the
// writer has not stored anything of since it started, it is read from
// ClickHouse (max(received_ms) per region). An origin among the configured
// regions with no watermark at all means the consumer starts from the
// beginning of the stream: slow, but nothing is skipped.

// site is a region the writer can consume from, connected when first
// needed.
type site struct {
	region, url string
	nc          *nats.Conn
	js          jetstream.JetStream
}

// failover is the writer's failover state. Except where noted, only the
// consume goroutine touches it.
type failover struct {
	sites []*site // home first, then the fallbacks in order
	cur   atomic.Pointer[site]
	// homeUpSince is when the home region started answering the probe
	// again, unix nanoseconds; 0 while it does not (probe goroutine).
	homeUpSince atomic.Int64
	// downSince is when the current region stopped being usable; zero
	// while it is.
	downSince time.Time
	// watermark is, per origin region, the latest received_ms stored.
	watermark map[string]uint64
	// checkUpTo is the watermark when the writer last changed regions:
	// readings received no later are looked up before insertion. nil
	// before the first change.
	checkUpTo map[string]uint64
	// fresh means the next consumer set up replaces the writer's durable
	// in the current region, starting at start (nil: the whole stream).
	fresh bool
	start *time.Time

	mu     sync.Mutex // guards conns, for Close
	closed bool

	failovers prometheus.Counter
	region    *prometheus.GaugeVec
}

// initMetrics registers the failover metrics on reg.
func (f *failover) initMetrics(reg prometheus.Registerer) {
	f.failovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "telemetry_storage_failovers_total",
		Help: "Changes of the region consumed from: to a fallback when the current one was unusable for the failover delay, or back home."})
	f.region = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "telemetry_storage_consuming_region",
		Help: "1 for the region whose READINGS the writer consumes, 0 for its other configured regions."}, []string{"region"})
	reg.MustRegister(f.failovers, f.region)
}

// setRegion marks region as the one consumed from.
func (f *failover) setRegion(region string) {
	for _, s := range f.sites {
		v := 0.0
		if s.region == region {
			v = 1
		}
		f.region.WithLabelValues(s.region).Set(v)
	}
}

// connect dials url without waiting for the server: the connection keeps
// retrying in the background.
func (w *Writer) connect(region, url string) (*nats.Conn, error) {
	log := w.log.With("region", region)
	nc, err := nats.Connect(url,
		nats.Name("telemetry-storage"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }),
	)
	if err != nil {
		return nil, fmt.Errorf("storage: connecting to NATS %s: %w", redact.URL(url), err)
	}
	return nc, nil
}

// initSites records the home connection and the fallbacks, not yet
// connected.
func (w *Writer) initSites(nc *nats.Conn, js jetstream.JetStream) {
	home := &site{region: w.cfg.Domain, url: w.cfg.NATSURL, nc: nc, js: js}
	w.fo.sites = []*site{home}
	for _, f := range w.cfg.Fallbacks {
		w.fo.sites = append(w.fo.sites, &site{region: f.Region, url: f.NATSURL})
	}
	w.fo.cur.Store(home)
	w.fo.watermark = map[string]uint64{}
	w.status.Region, w.status.HomeRegion = home.region, home.region
	w.fo.setRegion(home.region)
}

// regions are the home region and the fallbacks, in order.
func (w *Writer) regions() []string {
	out := make([]string, len(w.fo.sites))
	for i, s := range w.fo.sites {
		out[i] = s.region
	}
	return out
}

// current is the site consumed from; safe from any goroutine.
func (w *Writer) current() *site { return w.fo.cur.Load() }

// dial connects s if it is not yet.
func (w *Writer) dial(s *site) error {
	w.fo.mu.Lock()
	defer w.fo.mu.Unlock()
	if w.fo.closed {
		return errors.New("storage: closed")
	}
	if s.nc != nil {
		return nil
	}
	nc, err := w.connect(s.region, s.url)
	if err != nil {
		return err
	}
	js, err := jetstream.NewWithDomain(nc, s.region)
	if err != nil {
		nc.Close()
		return fmt.Errorf("storage: jetstream domain %s: %w", s.region, err)
	}
	s.nc, s.js = nc, js
	return nil
}

// closeSites closes every connection but the home one (Close closes that).
func (w *Writer) closeSites() {
	w.fo.mu.Lock()
	defer w.fo.mu.Unlock()
	w.fo.closed = true
	for _, s := range w.fo.sites[1:] {
		if s.nc != nil {
			_ = s.nc.FlushTimeout(time.Second)
			s.nc.Close()
		}
	}
}

// probe reports whether s's stream answers, within timeout.
func (w *Writer) probe(ctx context.Context, s *site, timeout time.Duration) error {
	if err := w.dial(s); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := s.js.Stream(ctx, w.cfg.Stream); err != nil {
		return fmt.Errorf("stream %s in %s: %w", w.cfg.Stream, s.region, err)
	}
	return nil
}

// probeInterval is how often the home region is probed while the writer
// consumes elsewhere.
func (w *Writer) probeInterval() time.Duration {
	return min(max(w.cfg.FailoverAfter/4, 100*time.Millisecond), 2*time.Second)
}

// probeHome watches the home region while the writer consumes elsewhere,
// until ctx ends, so that consume can move back once it has answered for
// FailoverAfter.
func (w *Writer) probeHome(ctx context.Context) {
	if len(w.fo.sites) < 2 {
		return
	}
	home := w.fo.sites[0]
	t := time.NewTicker(w.probeInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.current() == home {
			w.fo.homeUpSince.Store(0)
			continue
		}
		if err := w.probe(ctx, home, w.probeInterval()); err != nil || !home.nc.IsConnected() {
			w.fo.homeUpSince.Store(0)
			continue
		}
		w.fo.homeUpSince.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// siteDown records that the current region is unusable, and once it has
// been for FailoverAfter moves to the next region that answers. It
// reports whether it moved.
func (w *Writer) siteDown(ctx context.Context) bool {
	now := time.Now()
	if w.fo.downSince.IsZero() {
		w.fo.downSince = now
	}
	if len(w.fo.sites) < 2 || now.Sub(w.fo.downSince) < w.cfg.FailoverAfter {
		return false
	}
	cur := w.current()
	i := 0
	for i < len(w.fo.sites) && w.fo.sites[i] != cur {
		i++
	}
	for k := 1; k < len(w.fo.sites); k++ {
		next := w.fo.sites[(i+k)%len(w.fo.sites)]
		if err := w.probe(ctx, next, min(w.cfg.FailoverAfter, 5*time.Second)); err != nil {
			w.log.Warn("cannot fail over to region", "region", next.region, "err", err)
			continue
		}
		w.moveTo(ctx, next, fmt.Sprintf("%s unusable for %s", cur.region, now.Sub(w.fo.downSince).Round(time.Millisecond)))
		return true
	}
	return false
}

// siteUp records that the current region works, and moves back home once
// the home region has answered for FailoverAfter. It reports whether it
// moved.
func (w *Writer) siteUp(ctx context.Context) bool {
	w.fo.downSince = time.Time{}
	home := w.fo.sites[0]
	if w.current() == home {
		return false
	}
	up := w.fo.homeUpSince.Load()
	if up == 0 || time.Since(time.Unix(0, up)) < w.cfg.FailoverAfter {
		return false
	}
	w.moveTo(ctx, home, "home region answers again")
	return true
}

// moveTo makes s the current region: the next consumer set up there
// replaces the writer's durable with one starting at the watermark less
// the margin, and readings up to the watermark are looked up.
func (w *Writer) moveTo(ctx context.Context, s *site, why string) {
	from := w.current()
	wm := w.watermarks(ctx)
	w.fo.checkUpTo = wm
	w.fo.start = startTime(wm, w.regions(), w.cfg.FailoverMargin)
	w.fo.fresh = true
	w.fo.downSince = time.Time{}
	w.fo.homeUpSince.Store(0)
	w.fo.cur.Store(s)
	w.fo.failovers.Inc()
	w.fo.setRegion(s.region)
	w.mu.Lock()
	w.status.Region = s.region
	w.status.Failovers++
	w.mu.Unlock()
	start := "the start of the stream"
	if w.fo.start != nil {
		start = w.fo.start.UTC().Format(time.RFC3339Nano)
	}
	w.log.Warn("consuming from another region", "from", from.region, "to", s.region, "why", why, "starting_at", start)
}

// watermarks is the watermark per origin region, completed from
// ClickHouse for configured regions the writer has stored nothing of
// since it started. If ClickHouse does not answer, those regions stay
// without one (and the consumer starts from the beginning).
func (w *Writer) watermarks(ctx context.Context) map[string]uint64 {
	wm := make(map[string]uint64, len(w.fo.watermark))
	for r, v := range w.fo.watermark {
		wm[r] = v
	}
	complete := true
	for _, r := range w.regions() {
		if _, ok := wm[r]; !ok {
			complete = false
		}
	}
	if complete {
		return wm
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stored, err := storedWatermarks(qctx, w)
	if err != nil {
		w.log.Warn("cannot read the stored watermarks; the new consumer starts at the beginning of the stream", "err", err)
		return wm
	}
	for r, v := range stored {
		wm[r] = max(wm[r], v)
	}
	return wm
}

// storedWatermarks reads max(received_ms) per region from readings, over
// the last week (readings older than the streams' retention cannot be
// consumed again anyway).
func storedWatermarks(ctx context.Context, w *Writer) (map[string]uint64, error) {
	rows, err := w.conn.Query(ctx, "SELECT region, max(received_ms) FROM "+w.cfg.Database+
		".readings WHERE ts >= now() - 604800 AND received_ms > 0 GROUP BY region")
	if err != nil {
		return nil, fmt.Errorf("reading watermarks from ClickHouse: %w", err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var r string
		var v uint64
		if err := rows.Scan(&r, &v); err != nil {
			return nil, fmt.Errorf("reading watermarks from ClickHouse: %w", err)
		}
		out[r] = v
	}
	return out, rows.Err()
}

// startTime is where a consumer that must skip nothing starts: the
// smallest watermark less margin, or nil (the whole stream) when a
// configured region has none.
func startTime(wm map[string]uint64, regions []string, margin time.Duration) *time.Time {
	if len(wm) == 0 {
		return nil
	}
	for _, r := range regions {
		if _, ok := wm[r]; !ok {
			return nil
		}
	}
	low := uint64(math.MaxUint64)
	for _, v := range wm { // with origins beyond the configured regions
		low = min(low, v)
	}
	t := time.UnixMilli(int64(low)).Add(-margin)
	return &t
}

// mayBeStored reports whether rd, delivered since the writer last changed
// regions, may have been stored before the change.
func (w *Writer) mayBeStored(rd *reading) bool {
	if w.fo.checkUpTo == nil {
		return false
	}
	if rd.received == 0 {
		return true
	}
	up, ok := w.fo.checkUpTo[rd.region]
	return ok && rd.received <= up
}

// advance raises the watermarks with the readings of a stored batch.
func (w *Writer) advance(b *batch) {
	for i := range b.readings {
		rd := &b.readings[i]
		if rd.received > w.fo.watermark[rd.region] {
			w.fo.watermark[rd.region] = rd.received
		}
	}
}

// consumer creates the writer's durable consumer in the current region,
// or resumes it. After a change of region it replaces it, starting where
// nothing can be skipped; otherwise an existing one keeps its position
// and delivery policy.
func (w *Writer) consumer(ctx context.Context) (jetstream.Consumer, error) {
	s := w.current()
	if !s.nc.IsConnected() {
		return nil, fmt.Errorf("NATS %s in %s: not connected", redact.URL(s.url), s.region)
	}
	ctx, cancel := context.WithTimeout(ctx, min(10*time.Second, max(w.cfg.FailoverAfter, time.Second)))
	defer cancel()
	cfg := jetstream.ConsumerConfig{
		Durable:       w.cfg.Durable,
		Description:   "storage: every reading into ClickHouse",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxAckPending: w.cfg.MaxAckPending,
		MaxDeliver:    -1,
	}
	if w.fo.start != nil {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, w.fo.start
	}
	wrap := func(err error) error {
		return fmt.Errorf("consumer %s on stream %s in domain %s: %w", w.cfg.Durable, w.cfg.Stream, s.region, err)
	}
	if w.fo.fresh {
		if err := s.js.DeleteConsumer(ctx, w.cfg.Stream, w.cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, wrap(fmt.Errorf("replacing it: %w", err))
		}
		c, err := s.js.CreateConsumer(ctx, w.cfg.Stream, cfg)
		if err != nil {
			return nil, wrap(err)
		}
		w.fo.fresh = false
		return c, nil
	}
	// Resume: keep how an existing consumer started, which cannot be
	// changed (a failover may have created it with a start time).
	if old, err := s.js.Consumer(ctx, w.cfg.Stream, w.cfg.Durable); err == nil {
		oc := old.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = oc.DeliverPolicy, oc.OptStartTime, oc.OptStartSeq
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, wrap(err)
	}
	c, err := s.js.CreateOrUpdateConsumer(ctx, w.cfg.Stream, cfg)
	if err != nil {
		return nil, wrap(err)
	}
	return c, nil
}
