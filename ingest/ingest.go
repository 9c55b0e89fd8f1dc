package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/redact"
)

// DeadLetterIDPrefix starts the Nats-Msg-Id of a dead letter of a rejected
// payload (DeadLetterID), so it can never equal a reading's id.
const DeadLetterIDPrefix = "dl:"

// deadLetterIDHex is how many hex digits of the SHA-256 a dead letter's id
// keeps: 32, i.e. 128 bits.
const deadLetterIDHex = 32

// DeadLetterID is the Nats-Msg-Id of the dead letter of payload received on
// topic: "dl:" followed by the first 128 bits, in 32 lower-case hex digits,
// of SHA-256 over the topic's length (8 bytes, big endian), the topic and
// the payload's exact bytes. A redelivery of the same MQTT message (after
// ingest died or a PUBACK was lost) gets the same id, so JetStream collapses
// it within DEADLETTER's duplicate window, as it does re-sent readings in
// READINGS; different topics or bytes get different ids. The reason is not
// hashed: the same bytes on the same topic always get the same reason.
func DeadLetterID(topic string, payload []byte) string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(topic)))
	h.Write(n[:])
	h.Write([]byte(topic))
	h.Write(payload)
	var sum [sha256.Size]byte
	return DeadLetterIDPrefix + hex.EncodeToString(h.Sum(sum[:0]))[:deadLetterIDHex]
}

// Reasons ingest adds to the protocol's: failures of ingest itself rather
// than of the payload.
const (
	// ReasonPublishFailed: JetStream refused the message MaxAttempts times
	// with a permanent error (the detail says which).
	ReasonPublishFailed protocol.Reason = "publish_failed"
	// ReasonInternal: decoding the payload panicked. The payload is kept
	// so the bug can be reproduced.
	ReasonInternal protocol.Reason = "internal_error"
)

// stage is how far a job has been isolated after permanent refusals.
type stage uint8

const (
	stageAsReceived  stage = iota // the reading, or the dead letter of a rejected payload
	stageDeadLetter               // a refused reading, dead-lettered as publish_failed
	stageBodyOmitted              // a refused dead letter, kept without its body
)

// job is one MQTT message on its way to JetStream.
type job struct {
	mqtt     mqttMessage     // nil for a job not from MQTT (tests)
	msg      *nats.Msg       // reading, or a dead letter
	reading  *nats.Msg       // kept for the next reading when the job is recycled
	reason   protocol.Reason // empty for a valid reading
	detail   string          // the rejection's detail, for dead letters
	readings int             // a valid message's readings: 1, or a v2 batch's
	stage    stage
	received time.Time

	// The current publish, set by publisher.publish; dup and err are
	// valid once done is closed. done is nil when the job is to be
	// published (again).
	token uint64
	sent  time.Time
	done  chan struct{}
	dup   bool
	err   error
}

// jobPool recycles jobs once their MQTT message is acknowledged, with the
// JetStream message and header map of their reading: they were about half
// of what ingest allocated per reading.
var jobPool = sync.Pool{New: func() any { return new(job) }}

func newJob(received time.Time) *job {
	j := jobPool.Get().(*job)
	j.received = received
	return j
}

// release returns j to jobPool. Only the acker calls it, after the MQTT
// acknowledgement, when nothing refers to j any more: its publish was
// answered (or given up on) and the NATS client copied the message when it
// was sent.
func (j *job) release() {
	if m := j.reading; m != nil {
		m.Data = nil // not to keep the payload while pooled
	}
	*j = job{reading: j.reading}
	jobPool.Put(j)
}

// setReading makes j's message the reading with the given subject, payload,
// message id and received header, reusing the message of an earlier
// reading of this job.
func (j *job) setReading(subject string, payload []byte, id, received string) {
	m := j.reading
	if m == nil {
		m = &nats.Msg{Header: nats.Header{jetstream.MsgIDHeader: make([]string, 1), protocol.HeaderReceived: make([]string, 1)}}
		j.reading = m
	}
	m.Subject, m.Data = subject, payload
	m.Header[jetstream.MsgIDHeader][0] = id
	m.Header[protocol.HeaderReceived][0] = received
	j.msg = m
}

// Ingest bridges one region's MQTT topics to its JetStream streams. Several
// instances of a region split the load through a shared subscription.
type Ingest struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics

	nc  *nats.Conn
	pub *publisher
	mq  *mqttClient
	// timer bounds the acker's wait for each acknowledgement; the acker
	// alone uses it.
	timer *time.Timer

	// acks holds the published jobs for the acker, in MQTT order: at most
	// MaxInflight; the handler blocks when it is full. Run closes it once
	// stopping is closed and no message is being handled.
	acks chan *job
	// handling is held by the handler while it works on a message: a
	// message published to JetStream always reaches the acker, so a
	// graceful stop acknowledges everything JetStream stored.
	handling sync.Mutex
	stopping chan struct{}
	stopOnce sync.Once
	// drainOver is closed DrainTimeout after stopping: the acker then
	// gives up what JetStream has not confirmed.
	drainOver chan struct{}

	// blocked is whether publishes to JetStream succeed (health.go).
	blocked blockage
	// reconnected is when the NATS connection last came back (Unix
	// nanoseconds): a publish that failed before it is retried at once.
	reconnected atomic.Int64
	// recovered is when a retried publish last succeeded (Unix
	// nanoseconds): a publish that timed out before it is retried at once.
	recovered atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// New connects to NATS; MQTT is connected by Run, once the pipeline behind
// the subscription is ready to take messages.
func New(cfg Config, log *slog.Logger) (*Ingest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	log = log.With("component", "ingest", "region", cfg.Region, "client_id", cfg.ClientID)
	in := &Ingest{
		cfg:       cfg,
		log:       log,
		metrics:   newMetrics(cfg.Region, cfg.Instance),
		acks:      make(chan *job, cfg.MaxInflight),
		stopping:  make(chan struct{}),
		drainOver: make(chan struct{}),
		pub:       newPublisher(),
		timer:     time.NewTimer(time.Hour),
	}
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name(cfg.ClientID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// No hidden buffer while NATS is away: publishes fail at once, the
		// pipeline stops, and the broker holds the readings.
		nats.ReconnectBufSize(-1),
		nats.SetCustomDialer(&natsDialer{net.Dialer{Timeout: 2 * time.Second}}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", "err", err)
			in.pub.failAll(nats.ErrDisconnected)
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			in.reconnected.Store(time.Now().UnixNano())
			log.Info("NATS reconnected")
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("ingest %s: connecting to NATS %s: %w", cfg.Region, redact.URL(cfg.NATSURL), err)
	}
	if err := in.pub.start(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("ingest %s: %w", cfg.Region, err)
	}
	in.nc = nc
	// A refused login above all would otherwise only show as "MQTT not
	// connected" on /healthz; the client logs each distinct reason once.
	in.mq = newMQTTClient(cfg, in.handle, in.metrics.loginFailed.Inc, log)
	in.metrics.connected(nc.IsConnected, in.mq.connected)
	in.metrics.blockedFor(func() float64 { return in.blocked.seconds(time.Now()) })
	return in, nil
}

// Metrics returns ingest's Prometheus collectors.
func (in *Ingest) Metrics() *Metrics { return in.metrics }

// Ready reports whether both connections are up and JetStream takes what
// ingest publishes (a refusal lasting BlockedAfter is an error, with why).
func (in *Ingest) Ready() error {
	if !in.nc.IsConnected() {
		return fmt.Errorf("ingest %s: NATS not connected", in.cfg.Region)
	}
	if !in.mq.connected() {
		return fmt.Errorf("ingest %s: MQTT not connected", in.cfg.Region)
	}
	if !in.mq.subscribedNow() {
		return fmt.Errorf("ingest %s: MQTT subscription to %s not granted (yet, or refused by the broker's ACL)", in.cfg.Region, in.cfg.Topic())
	}
	if why, since := in.blocked.state(time.Now()); why != "" {
		return fmt.Errorf("ingest %s: cannot publish since %s: %s", in.cfg.Region, since.UTC().Format(time.TimeOnly), why)
	}
	return nil
}

// Run subscribes and bridges until ctx is cancelled. Then it stops taking
// messages, finishes what is in flight (up to DrainTimeout), acknowledges
// what JetStream confirmed and disconnects; the rest stays in the broker's
// session for this client id and is redelivered when it reconnects.
func (in *Ingest) Run(ctx context.Context) error {
	var acker sync.WaitGroup
	acker.Add(1)
	go func() { defer acker.Done(); in.ackLoop() }()
	// The client outlives ctx: it sends the acker's last PUBACKs, then
	// DISCONNECT.
	in.mq.connect()
	hbCtx, stopHeartbeat := context.WithCancel(context.Background())
	var heartbeat sync.WaitGroup
	heartbeat.Add(1)
	go func() { defer heartbeat.Done(); in.heartbeat(hbCtx) }()

	<-ctx.Done()
	in.log.Info("stopping: finishing messages in flight")
	in.stop()
	drain := time.AfterFunc(in.cfg.DrainTimeout, func() { close(in.drainOver) })
	defer drain.Stop()
	// The handler sees stopping from here on: what it already published
	// is queued before acks closes.
	in.handling.Lock()
	close(in.acks)
	in.handling.Unlock()
	acker.Wait()
	in.mq.disconnect()
	stopHeartbeat()
	heartbeat.Wait()
	in.log.Info("stopped")
	return nil
}

func (in *Ingest) stop() { in.stopOnce.Do(func() { close(in.stopping) }) }

func (in *Ingest) stopped() bool {
	select {
	case <-in.stopping:
		return true
	default:
		return false
	}
}

// handle runs on the MQTT client's router goroutine for each message, in
// arrival order: it decodes the message, publishes it asynchronously and
// queues it for the acker. Blocking here, when MaxInflight messages await
// JetStream, is the backpressure: the client stops reading and the broker
// holds the rest (mqttClient says what that costs).
func (in *Ingest) handle(m mqttMessage) {
	in.handling.Lock()
	defer in.handling.Unlock()
	if in.stopped() {
		return // not acknowledged: the broker redelivers it to this session
	}
	in.metrics.received.Inc()
	if m.Duplicate() {
		in.metrics.redelivered.Inc()
	}
	j := in.prepare(m.Topic(), m.Payload(), in.cfg.Now())
	j.mqtt = m
	in.pub.publish(j)
	in.metrics.inflight.Inc()
	in.acks <- j // the acker takes it even when stopping (Run)
}

// prepare decodes one MQTT message into the JetStream message to publish: a
// reading, or a dead letter with its reason. It never panics: a panic in
// decoding dead-letters the payload as internal_error.
func (in *Ingest) prepare(topic string, payload []byte, received time.Time) (j *job) {
	j = newJob(received)
	defer func() {
		if r := recover(); r != nil {
			in.metrics.errors.WithLabelValues("panic").Inc()
			in.log.Error("decoding panicked; dead-lettering the payload", "topic", safeHeader(topic), "panic", r)
			j = &job{received: received, reason: ReasonInternal, detail: fmt.Sprintf("panic while decoding: %v", r)}
			j.msg = in.deadLetter(DeadLetterID(topic, payload), topic, payload, j.reason, j.detail, received)
		}
	}()
	t, batch, err := protocol.Decode(topic, payload, received, in.cfg.Limits)
	if err != nil {
		var rej *protocol.Rejection
		if !errors.As(err, &rej) {
			rej = &protocol.Rejection{Reason: protocol.ReasonBadJSON, Detail: err.Error()}
		}
		j.reason, j.detail = rej.Reason, rej.Detail
		j.msg = in.deadLetter(DeadLetterID(topic, payload), topic, payload, j.reason, j.detail, received)
		return j
	}
	if t.Region != in.cfg.Region {
		// The subscription makes this impossible; were it to happen, the
		// subject would be outside READINGS and the publish never succeed.
		j.reason, j.detail = protocol.ReasonBadTopic, fmt.Sprintf("topic of region %q, this ingest serves %q", t.Region, in.cfg.Region)
		j.msg = in.deadLetter(DeadLetterID(topic, payload), topic, payload, j.reason, j.detail, received)
		return j
	}
	// A batch goes to JetStream as it came, with the batch's id.
	j.setReading(t.Subject(), payload, batch.ID(), strconv.FormatInt(received.UnixMilli(), 10))
	j.readings = len(batch.Readings)
	return j
}

// deadLetter builds the dead letter of payload with message id id: the
// DeadLetterID of a rejected payload, or the id of the message it replaces
// when one is isolated, so that a redelivery collapses in either case.
func (in *Ingest) deadLetter(id, topic string, payload []byte, reason protocol.Reason, detail string, received time.Time) *nats.Msg {
	return &nats.Msg{
		Subject: protocol.DeadLetterSubject(in.cfg.Region, reason),
		Data:    payload,
		Header: nats.Header{
			jetstream.MsgIDHeader:   {id},
			protocol.HeaderReason:   {string(reason)},
			protocol.HeaderTopic:    {safeHeader(topic)},
			protocol.HeaderDetail:   {safeHeader(detail)},
			protocol.HeaderReceived: {strconv.FormatInt(received.UnixMilli(), 10)},
		},
	}
}

// bodilessDeadLetter is the dead letter of a payload of size bytes kept
// without its body, the size in protocol.HeaderOmitted.
func (in *Ingest) bodilessDeadLetter(id, topic string, size int, reason protocol.Reason, detail string, received time.Time) *nats.Msg {
	m := in.deadLetter(id, topic, nil, reason, detail, received)
	m.Header.Set(protocol.HeaderOmitted, strconv.Itoa(size))
	return m
}

// ackLoop waits for each JetStream acknowledgement in order, retries what
// failed, and acknowledges the MQTT message once JetStream has it. When
// ingest stops, it finishes everything the handler published and returns
// when acks is closed; what JetStream did not confirm by the drain deadline
// is never acknowledged in MQTT, so the broker redelivers it.
func (in *Ingest) ackLoop() {
	for j := range in.acks {
		ok := in.await(j)
		in.metrics.inflight.Dec()
		if !ok {
			// Stopped before JetStream confirmed: leave it unacknowledged
			// so the broker redelivers it; the message id collapses it if
			// JetStream did store it.
			continue
		}
		if j.mqtt != nil {
			// Sent on the connection the message came on, or dropped with
			// it: the broker then redelivers the message.
			j.mqtt.Ack()
		}
		in.metrics.latency.Observe(time.Since(j.received).Seconds())
		j.release()
	}
}

// await returns true once JetStream has stored j's message, or its dead
// letter: transient failures are retried with backoff for as long as ingest
// runs, permanent refusals at most MaxAttempts times before the message is
// isolated. It returns false once DrainTimeout has passed since ingest
// began stopping (one deadline for all that is in flight).
func (in *Ingest) await(j *job) bool {
	backoff := in.cfg.RetryBackoff
	refused := 0
	for attempt := 1; ; attempt++ {
		dup, err := in.result(j)
		if err == nil {
			if attempt > 1 {
				in.recovered.Store(time.Now().UnixNano())
			}
			in.blocked.succeeded()
			in.count(j, dup)
			return true
		}
		if errors.Is(err, errDrainOver) {
			return false
		}
		j.done = nil
		sent := j.sent.UnixNano()
		if !Permanent(err) && (sent < in.reconnected.Load() || sent < in.recovered.Load()) {
			// It was sent before an outage ended: the connection came
			// back, or a retried publish went through (a stream that had
			// no leader while its cluster elected one answers "no
			// responders" until it has). Publish it again now, without a
			// backoff, a log line or a blocked state of its own. Waiting
			// out a backoff for each of the MaxInflight messages that
			// failed during an outage kept ingest (and the broker's held
			// publishers) back for 50 s after NATS returned
			// (TestRegionNATSDownUnderLoad/embedded) and after READINGS's
			// leader died in a cluster (TestReadingsLeaderKilledUnderLoad).
			// Publishing again sets j.sent, so a message that fails again
			// waits out its backoff.
			in.metrics.errors.WithLabelValues("publish").Inc()
			continue
		}
		in.blocked.failed(blockReason(in.cfg.Region, j.msg.Subject, err), time.Now())
		if Permanent(err) {
			in.metrics.errors.WithLabelValues("refused").Inc()
			if refused++; refused >= in.cfg.MaxAttempts {
				if in.isolate(j, err) {
					refused, backoff = 0, in.cfg.RetryBackoff
					continue
				}
				// Nothing of the payload is left to blame: DEADLETTER itself
				// refuses a bodiless message, a configuration fault. Treat
				// it as an outage and keep the backpressure.
				if attempt%10 == 1 {
					in.log.Error("DEADLETTER refuses even a bodiless dead letter; check its configuration", "subject", j.msg.Subject, "err", err)
				}
			}
		} else {
			in.metrics.errors.WithLabelValues("publish").Inc()
		}
		if attempt == 1 || attempt%10 == 0 {
			in.log.Warn("JetStream publish failed; retrying", "subject", j.msg.Subject, "attempt", attempt, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-in.drainOver:
			return false
		}
		backoff = min(backoff*2, in.cfg.MaxRetryBackoff)
	}
}

// errDrainOver: ingest is stopping and its DrainTimeout has passed; the
// message stays unacknowledged in MQTT and the broker redelivers it.
var errDrainOver = errors.New("stopping: drain timeout passed")

// result waits for j's publish, publishing it first if a retry is due, at
// most PublishTimeout from when it was sent. It reports whether JetStream
// already held the message id.
func (in *Ingest) result(j *job) (duplicate bool, err error) {
	if j.done == nil {
		in.pub.publish(j)
	}
	select {
	case <-j.done:
		return j.dup, j.err
	default:
	}
	in.timer.Reset(time.Until(j.sent.Add(in.cfg.PublishTimeout)))
	select {
	case <-j.done:
	case <-in.timer.C:
		if in.pub.abandon(j) {
			return false, errPublishTimeout
		}
		<-j.done // answered while the timer fired
	case <-in.drainOver:
		if in.pub.abandon(j) {
			return false, errDrainOver
		}
		<-j.done
	}
	return j.dup, j.err
}

// isolate replaces j's message with the next, smaller thing to keep after
// JetStream refused it: a refused reading becomes a publish_failed dead
// letter with the original bytes; a refused dead letter loses its body. It
// reports false when there is nothing left to strip. The replacement keeps
// the message id of what it replaces (the reading's device:boot:seq, or the
// dead letter's DeadLetterID), so a redelivery of the same MQTT message
// collapses in DEADLETTER however far it was isolated.
func (in *Ingest) isolate(j *job, cause error) bool {
	topic, payload := j.msg.Header.Get(protocol.HeaderTopic), j.msg.Data
	if j.mqtt != nil {
		topic, payload = j.mqtt.Topic(), j.mqtt.Payload()
	}
	id := j.msg.Header.Get(jetstream.MsgIDHeader)
	if id == "" {
		id = DeadLetterID(topic, payload)
	}
	switch {
	case j.stage == stageAsReceived && j.reason == "":
		j.reason, j.detail = ReasonPublishFailed, "JetStream refused the reading: "+cause.Error()
		j.msg = in.deadLetter(id, topic, payload, j.reason, j.detail, j.received)
		j.stage = stageDeadLetter
	case j.stage < stageBodyOmitted:
		detail := j.detail + "; body omitted, JetStream refused it: " + cause.Error()
		j.msg = in.bodilessDeadLetter(id, topic, len(payload), j.reason, detail, j.received)
		j.stage = stageBodyOmitted
	default:
		return false
	}
	in.metrics.isolated.Inc()
	in.log.Warn("isolating a message JetStream refuses", "topic", safeHeader(topic), "reason", j.reason, "err", cause)
	return true
}

// Permanent reports whether a publish error is JetStream refusing the
// message itself (an API error with a 4xx code: too large for the stream,
// sealed stream, bad header) or the client refusing it (over the server's
// max payload, bad subject), so that retrying cannot help. Everything else
// (timeouts, no responders, disconnection, a full stream, which answers 503)
// is transient.
func Permanent(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code >= 400 && apiErr.Code < 500
	}
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, nats.ErrBadHeaderMsg)
}

func (in *Ingest) count(j *job, duplicate bool) {
	switch {
	case j.reason != "":
		// Every rejection counts, so that received = accepted + duplicates
		// + rejected; the dead letters JetStream already held are also
		// counted on their own.
		in.metrics.rejected.WithLabelValues(string(j.reason)).Inc()
		if duplicate {
			in.metrics.dlDups.Inc()
		}
	case duplicate:
		device := "other" // never: ingest built the subject from a valid topic
		if t, err := protocol.ParseSubject(j.msg.Subject); err == nil {
			device = t.Device
		}
		in.metrics.duplicate(device)
	default:
		in.metrics.accepted.Inc()
		in.metrics.readings.Add(float64(j.readings))
	}
}

// Close releases the NATS connection. Call it after Run has returned.
func (in *Ingest) Close() error {
	in.closeOnce.Do(func() {
		in.stop()
		if in.nc != nil {
			in.closeErr = in.nc.Drain()
		}
	})
	return in.closeErr
}
