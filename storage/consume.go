package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/redact"
)

// batch is the readings in hand: the messages to acknowledge, the distinct
// readings they carry, and the rows of those to insert.
type batch struct {
	msgs     []jetstream.Msg // all acknowledged once the batch is stored
	readings []reading       // distinct: a copy of one in hand is not added
	index    map[readingKey]int
	cols     columns   // rows of the readings not stored yet, built per attempt
	fetched  time.Time // when the oldest message arrived, for AckWait
	copies   int       // messages whose reading was in the batch already
	stored   int       // readings found stored already by the last attempt
}

func newBatch(size int) *batch {
	return &batch{msgs: make([]jetstream.Msg, 0, size), readings: make([]reading, 0, size), index: make(map[readingKey]int, size)}
}

func (b *batch) reset() {
	clear(b.msgs) // drop references to the messages
	b.msgs = b.msgs[:0]
	clear(b.readings)
	b.readings = b.readings[:0]
	clear(b.index)
	b.cols.reset()
	b.copies, b.stored = 0, 0
}

// add takes message m carrying rds (one reading, or a v2 batch's); a copy
// of a reading in hand is only acknowledged with it.
func (b *batch) add(m jetstream.Msg, rds []reading) {
	b.msgs = append(b.msgs, m)
	for _, rd := range rds {
		if i, ok := b.index[rd.key]; ok {
			b.readings[i].check = b.readings[i].check || rd.check
			b.copies++
			continue
		}
		b.index[rd.key] = len(b.readings)
		b.readings = append(b.readings, rd)
	}
}

// consume is the writer's loop: set up (migrations, consumer), then fetch a
// batch, insert it, acknowledge it, again, until ctx ends.
func (w *Writer) consume(ctx context.Context) error {
	// Once ctx ends, the batch in hand gets DrainTimeout more to be stored.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.cfg.DrainTimeout, cancelDrain)
		context.AfterFunc(drainCtx, func() { t.Stop() })
	})
	defer stop()

	bo := w.backoff()
	var (
		cons     jetstream.Consumer
		migrated bool
		b        = newBatch(w.cfg.BatchSize)
	)
	for ctx.Err() == nil {
		if cons == nil {
			var err error
			if !migrated {
				if err = w.migrate(ctx); err == nil {
					migrated = true
				}
			}
			if err == nil {
				if cons, err = w.consumer(ctx); err == nil {
					w.seen = deliveredUpTo(cons.CachedInfo())
				}
			}
			if err != nil {
				w.setState(StateConnecting, err)
				if migrated && w.siteDown(ctx) {
					bo.Reset()
					continue
				}
				sleep(ctx, bo.NextBackOff())
				continue
			}
			bo.Reset()
			w.setState(StateOK, nil)
		}

		fetchErr := w.fetch(cons, b)
		if len(b.msgs) > 0 {
			if err := w.store(drainCtx, ctx.Done(), b); err != nil {
				// Only when stopping: hand the batch back for the next run.
				w.log.Warn("stopping with a batch not stored; handed back to JetStream", "readings", len(b.msgs), "err", err)
				for _, m := range b.msgs {
					_ = m.Nak()
				}
				return nil
			}
			for _, m := range b.msgs {
				// A lost acknowledgement means a redelivery, which the
				// table collapses: no need to wait for confirmation.
				_ = m.Ack()
			}
		}
		b.reset()
		if fetchErr != nil {
			w.setState(StateNATSDown, fetchErr)
			cons = nil // set up again: the consumer or stream may be gone
			if !w.siteDown(ctx) {
				sleep(ctx, bo.NextBackOff())
			}
			continue
		}
		if s := w.current(); !s.nc.IsConnected() {
			w.setState(StateNATSDown, fmt.Errorf("NATS %s in %s: not connected, reconnecting", redact.URL(s.url), s.region))
			if w.siteDown(ctx) {
				cons = nil
			} else {
				sleep(ctx, bo.NextBackOff())
			}
			continue
		}
		bo.Reset()
		if w.siteUp(ctx) {
			cons = nil
			continue
		}
		if s := w.Status().State; s != StateOK {
			w.setState(StateOK, nil)
		}
	}
	return nil
}

func (w *Writer) backoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     w.cfg.RetryBackoff,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         w.cfg.MaxRetryBackoff,
	}
}

func (w *Writer) migrate(ctx context.Context) error {
	applied, err := MigrateCluster(ctx, w.conn, w.cfg.Database, w.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("ClickHouse at %s: %w", w.cfg.ClickHouseAddr, err)
	}
	if len(applied) > 0 {
		w.log.Info("migrations applied", "database", w.cfg.Database, "versions", applied)
	}
	return nil
}

// fetch fills b with up to BatchSize messages, waiting at most
// FlushInterval. A message that cannot become rows is acknowledged at once
// and counted: policy "skip poison". It stays in the stream for
// inspection, and redelivering it would only fail again.
func (w *Writer) fetch(cons jetstream.Consumer, b *batch) error {
	// Messages carry one reading (v1) or a batch (v2): ask for as many as
	// make BatchSize readings if they are like the previous fetch's
	// largest.
	n := max(1, (w.cfg.BatchSize-len(b.readings))/max(1, w.perMsg))
	mb, err := cons.Fetch(n, jetstream.FetchMaxWait(w.cfg.FlushInterval), jetstream.FetchMaxBytes(fetchBytes(w.cfg.BatchSize)))
	if err != nil {
		return fmt.Errorf("fetching from %s in %s: %w", w.cfg.Stream, w.current().region, err)
	}
	var scratch []reading // one message's readings
	largest := 0
	defer func() {
		if largest > 0 {
			w.perMsg = largest
		}
	}()
	for m := range mb.Messages() {
		if len(b.msgs) == 0 {
			b.fetched = time.Now()
		}
		md, mdErr := m.Metadata()
		if mdErr == nil {
			w.checkGap(md.Sequence.Stream)
		}
		rds, err := decode(scratch[:0], m.Subject(), m.Data(), m.Headers())
		scratch = rds
		largest = max(largest, len(rds))
		if err != nil {
			w.metrics.decodeErrors.Inc()
			w.mu.Lock()
			w.status.DecodeErrors++
			w.mu.Unlock()
			attrs := []any{"subject", m.Subject(), "err", err}
			if mdErr == nil {
				attrs = append(attrs, "stream_seq", md.Sequence.Stream)
			}
			w.log.Warn("skipping a message that cannot be stored", attrs...)
			_ = m.Ack()
			continue
		}
		// Delivered before: an earlier writer may have stored it and died
		// before acknowledging (see dedupe.go).
		// Or delivered by another region than the one it may have been
		// stored from (see failover.go).
		redelivered := w.cfg.CheckAll || mdErr != nil || md.NumDelivered > 1
		for i := range rds {
			rds[i].check = redelivered || w.mayBeStored(&rds[i])
		}
		b.add(m, rds)
	}
	if err := mb.Error(); err != nil {
		return fmt.Errorf("fetching from %s: %w", w.cfg.Stream, err)
	}
	return nil
}

// deliveredUpTo is where the gap check of a consumer starts: the highest
// stream sequence it delivered before, or 0 (unknown: start at its first
// delivery) for a consumer that never delivered anything, such as one just
// created to start at a time.
func deliveredUpTo(info *jetstream.ConsumerInfo) uint64 {
	if info == nil || info.Delivered.Consumer == 0 {
		return 0
	}
	return info.Delivered.Stream
}

// checkGap counts the readings READINGS dropped before they were
// delivered. The consumer delivers new messages in stream order, so a
// message more than one past the highest the writer has seen leaves a gap.
// Most gaps are not losses: messages the server delivered just as a fetch
// gave up never reach the writer and come back later as redeliveries. The
// stream tells them apart: its byte budget and max age remove the oldest
// messages, so of a gap only the sequences below the stream's first are
// gone. (A message lost at a fetch boundary and then removed before its
// redelivery is not seen here; the ledger still lists it as missing.)
func (w *Writer) checkGap(seq uint64) {
	last := w.seen
	if seq <= last {
		return
	}
	w.seen = seq
	if last == 0 || seq == last+1 {
		return
	}
	first, err := w.firstSeq()
	if err != nil {
		w.log.Debug("cannot tell whether a gap was dropped", "stream_seq_from", last+1, "stream_seq_to", seq-1, "err", err)
		return
	}
	if first <= last+1 {
		return // the gap is still in the stream: in flight, redelivered later
	}
	n := min(seq, first) - (last + 1)
	w.metrics.discarded.Add(float64(n))
	w.mu.Lock()
	w.status.Discarded += n
	w.mu.Unlock()
	w.log.Warn("readings dropped by READINGS before storage read them: lost (the stream's budget or max age was reached while storage was behind)",
		"region", w.current().region, "readings", n, "stream_seq_from", last+1, "stream_seq_to", last+n)
}

// firstSeq asks the stream consumed for its first sequence.
func (w *Writer) firstSeq() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := w.current().js.Stream(ctx, w.cfg.Stream)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.FirstSeq, nil
}

// store inserts the readings of b that ClickHouse does not hold yet,
// retrying with backoff until it succeeds or ctx ends. Once stopping is
// closed, a failed attempt is the last: the batch goes back to JetStream
// rather than keep a stopping writer waiting for a ClickHouse that is down.
// While it retries it tells JetStream the batch is in progress, so that it
// is not delivered again meanwhile.
func (w *Writer) store(ctx context.Context, stopping <-chan struct{}, b *batch) error {
	bo := w.backoff()
	for attempt := 1; ; attempt++ {
		start := time.Now()
		ictx, cancel := context.WithTimeout(ctx, w.cfg.AckWait/2)
		err := w.insert(ictx, b)
		cancel()
		if err == nil {
			w.stored(b, time.Since(start))
			return nil
		}
		w.metrics.insertErrors.Inc()
		select {
		case <-stopping:
			return fmt.Errorf("stopping, insert failed: %w", err)
		default:
		}
		wait := bo.NextBackOff()
		w.setState(StateRetrying, fmt.Errorf("inserting into ClickHouse at %s (attempt %d): %w", w.cfg.ClickHouseAddr, attempt, err))
		w.log.Warn("insert failed; retrying", "attempt", attempt, "readings", len(b.readings), "in", wait.Round(time.Millisecond), "err", err)
		if time.Since(b.fetched) > w.cfg.AckWait/3 {
			for _, m := range b.msgs {
				_ = m.InProgress()
			}
			b.fetched = time.Now()
		}
		// A stop cuts the wait short: one more attempt, then the batch
		// goes back.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-stopping:
			t.Stop()
		case <-t.C:
		}
	}
}

// insert looks up the readings of b that may be stored already, builds
// the rows of the others and inserts them in one INSERT. If the insert
// fails every reading is marked for a lookup: it may have landed anyway.
func (w *Writer) insert(ctx context.Context, b *batch) error {
	var check []*reading
	for i := range b.readings {
		if b.readings[i].check {
			check = append(check, &b.readings[i])
		}
	}
	var found map[readingKey]bool
	if len(check) > 0 {
		var err error
		if found, err = storedAmong(ctx, w.conn, w.cfg.Database, check); err != nil {
			return err
		}
		w.metrics.lookedUp.Add(float64(len(check)))
	}
	b.cols.reset()
	b.stored = 0
	for i := range b.readings {
		if found[b.readings[i].key] {
			b.stored++
			continue
		}
		b.cols.append(&b.readings[i])
	}
	if b.cols.rows() == 0 {
		return nil
	}
	if err := b.cols.insert(ctx, w.conn, w.cfg.Database); err != nil {
		for i := range b.readings {
			b.readings[i].check = true
		}
		return err
	}
	return nil
}

func (w *Writer) stored(b *batch, took time.Duration) {
	w.advance(b)
	rows, readings := b.cols.rows(), b.cols.readings
	now := time.Now()
	w.metrics.dupBatch.Add(float64(b.copies))
	w.metrics.dupStored.Add(float64(b.stored))
	if readings > 0 {
		w.metrics.rows.Add(float64(rows))
		w.metrics.readings.Add(float64(readings))
		w.metrics.batchReadings.Observe(float64(readings))
		w.metrics.batchRows.Observe(float64(rows))
		w.metrics.insertSeconds.Observe(took.Seconds())
		w.metrics.lastInsert.Set(float64(now.Unix()))
	}
	w.mu.Lock()
	w.status.RowsStored += uint64(rows)
	w.status.ReadingsStored += uint64(readings)
	w.status.DuplicatesDropped += uint64(b.copies + b.stored)
	if readings > 0 {
		w.status.LastInsert = now.UTC().Format(time.RFC3339)
	}
	w.mu.Unlock()
	if w.Status().State == StateRetrying {
		w.setState(StateOK, nil)
	}
}

// sleep waits d or until ctx ends, reporting whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
