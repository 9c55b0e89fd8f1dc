package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// Headers ingest sets on JetStream messages.
const (
	HeaderReceived = "Telemetry-Received" // unix ms when ingest took the MQTT message
	HeaderReason   = "Telemetry-Reason"
	HeaderTopic    = "Telemetry-Topic"
	HeaderDetail   = "Telemetry-Detail"
)

// Config configures one region's bridge. Tests build it directly.
type Config struct {
	Region string
	// Broker is the MQTT broker URL, tcp://host:port.
	Broker   string
	Username string
	Password string
	// ClientID identifies ingest's persistent MQTT session; default
	// telemetry-ingest-<region>.
	ClientID string

	// NATSURL is the region's NATS server; Domain its JetStream domain
	// (default Region).
	NATSURL string
	Domain  string

	// MaxInflight bounds the messages taken from MQTT and not yet
	// acknowledged by JetStream. Policy: block (backpressure to the broker).
	MaxInflight int
	// PublishTimeout bounds the wait for one JetStream acknowledgement
	// before the publish is retried with the same message id.
	PublishTimeout time.Duration
	// RetryBackoff is the first pause between publish retries; it doubles up
	// to MaxRetryBackoff. Retries go on until JetStream accepts or ingest
	// stops: the reading stays unacknowledged in MQTT meanwhile.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// DrainTimeout bounds how long Close waits for in-flight publishes.
	DrainTimeout time.Duration

	Limits protocol.Limits
}

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "telemetry-ingest-" + c.Region
	}
	if c.Domain == "" {
		c.Domain = c.Region
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1024
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = 5 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case !protocol.ValidName(c.Region):
		return fmt.Errorf("ingest: region %q: want lower-case letters, digits and dashes", c.Region)
	case c.Broker == "":
		return errors.New("ingest: MQTT broker URL is required")
	case c.NATSURL == "":
		return errors.New("ingest: NATS URL is required")
	case c.MaxInflight < 1:
		return errors.New("ingest: max in-flight must be at least 1")
	}
	return nil
}

// job is one MQTT message on its way to JetStream.
type job struct {
	mqtt     mqtt.Message
	msg      *nats.Msg
	reason   protocol.Reason // empty for a valid reading
	received time.Time
	future   jetstream.PubAckFuture
}

// Ingest bridges one region's MQTT topics to its JetStream streams.
type Ingest struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics

	nc *nats.Conn
	js jetstream.JetStream
	mq mqtt.Client

	jobs     chan *job // handler -> publisher; bounded, blocks when full
	acks     chan *job // publisher -> acker, in MQTT order; bounded
	stopping chan struct{}
	stopOnce sync.Once

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
	log = log.With("component", "ingest", "region", cfg.Region)
	in := &Ingest{
		cfg:      cfg,
		log:      log,
		metrics:  newMetrics(cfg.Region),
		jobs:     make(chan *job, cfg.MaxInflight/2+1),
		acks:     make(chan *job, cfg.MaxInflight/2+1),
		stopping: make(chan struct{}),
	}
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("telemetry-ingest-"+cfg.Region),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }),
	)
	if err != nil {
		return nil, fmt.Errorf("ingest %s: connecting to NATS %s: %w", cfg.Region, redact(cfg.NATSURL), err)
	}
	js, err := jetstream.NewWithDomain(nc, cfg.Domain,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInflight),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ingest %s: jetstream: %w", cfg.Region, err)
	}
	in.nc, in.js = nc, js
	in.mq = in.newMQTT()
	return in, nil
}

// newMQTT builds the persistent-session client; Run connects it.
func (in *Ingest) newMQTT() mqtt.Client {
	topic := "telemetry/" + in.cfg.Region + "/#"
	opts := mqtt.NewClientOptions().
		AddBroker(in.cfg.Broker).
		SetClientID(in.cfg.ClientID).
		SetUsername(in.cfg.Username).
		SetPassword(in.cfg.Password).
		SetCleanSession(false). // the broker keeps what arrives while ingest is away
		SetAutoAckDisabled(true).
		SetOrderMatters(true). // PUBACKs go out in the order messages came in
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(20 * time.Second).
		SetOnConnectHandler(func(c mqtt.Client) {
			// Subscribe on every connect: a broker that lost the session
			// must get the subscription back.
			tok := c.Subscribe(topic, 1, in.handle)
			go func() {
				if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
					in.log.Error("MQTT subscribe failed", "topic", topic, "err", tok.Error())
					return
				}
				in.log.Info("MQTT subscribed", "topic", topic)
			}()
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			in.log.Warn("MQTT connection lost", "err", err)
		})
	return mqtt.NewClient(opts)
}

// Metrics returns ingest's Prometheus collectors.
func (in *Ingest) Metrics() *Metrics { return in.metrics }

// Ready reports whether both connections are up.
func (in *Ingest) Ready() error {
	if !in.nc.IsConnected() {
		return fmt.Errorf("ingest %s: NATS not connected", in.cfg.Region)
	}
	if !in.mq.IsConnectionOpen() {
		return fmt.Errorf("ingest %s: MQTT not connected", in.cfg.Region)
	}
	return nil
}

// Run subscribes and bridges until ctx is cancelled, then stops taking
// messages, finishes what is in flight, and disconnects.
func (in *Ingest) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); in.publishLoop() }()
	go func() { defer wg.Done(); in.ackLoop() }()

	in.mq.Connect() // retries in the background until it succeeds or Disconnect

	<-ctx.Done()
	in.stop()
	wg.Wait()
	in.mq.Disconnect(250)
	return nil
}

func (in *Ingest) stop() { in.stopOnce.Do(func() { close(in.stopping) }) }

// handle runs on paho's router goroutine for each message. Blocking here is
// the backpressure: paho stops reading and the broker holds the rest.
func (in *Ingest) handle(_ mqtt.Client, m mqtt.Message) {
	received := time.Now()
	in.metrics.received.Inc()
	j := &job{mqtt: m, received: received}
	topic, reading, err := protocol.Decode(m.Topic(), m.Payload(), received, in.cfg.Limits)
	if err != nil {
		var rej *protocol.Rejection
		if !errors.As(err, &rej) {
			rej = &protocol.Rejection{Reason: protocol.ReasonBadJSON, Detail: err.Error()}
		}
		j.reason = rej.Reason
		j.msg = in.deadLetter(m, rej)
	} else {
		j.msg = &nats.Msg{Subject: topic.Subject(), Data: m.Payload(), Header: nats.Header{}}
		j.msg.Header.Set(jetstream.MsgIDHeader, reading.ID())
		j.msg.Header.Set(HeaderReceived, strconv.FormatInt(received.UnixMilli(), 10))
	}
	select {
	case in.jobs <- j:
	case <-in.stopping:
		// Not acknowledged: the broker redelivers it to the next session.
	}
}

func (in *Ingest) deadLetter(m mqtt.Message, rej *protocol.Rejection) *nats.Msg {
	msg := &nats.Msg{
		Subject: stream.DeadLetterSubject(in.cfg.Region, string(rej.Reason)),
		Data:    m.Payload(),
		Header:  nats.Header{},
	}
	msg.Header.Set(HeaderReason, string(rej.Reason))
	msg.Header.Set(HeaderTopic, safeHeader(m.Topic()))
	msg.Header.Set(HeaderDetail, safeHeader(rej.Detail))
	msg.Header.Set(HeaderReceived, strconv.FormatInt(time.Now().UnixMilli(), 10))
	return msg
}

// publishLoop publishes jobs asynchronously in arrival order and hands them
// to the acker. It stops taking jobs when ingest stops; jobs left in the
// queue are never acknowledged in MQTT and so are redelivered later.
func (in *Ingest) publishLoop() {
	defer close(in.acks)
	for {
		select {
		case <-in.stopping:
			return
		case j := <-in.jobs:
			j.future = in.publishAsync(j)
			in.metrics.inflight.Inc()
			in.acks <- j
		}
	}
}

// publishAsync starts the publish; when the async window is full it retries
// until there is room or ingest stops, in which case the future is nil and
// the acker retries synchronously.
func (in *Ingest) publishAsync(j *job) jetstream.PubAckFuture {
	f, err := in.js.PublishMsgAsync(j.msg)
	if err != nil {
		in.metrics.errors.WithLabelValues("publish").Inc()
		return nil
	}
	return f
}

// ackLoop waits for each JetStream acknowledgement in order, retries what
// failed, and acknowledges the MQTT message once JetStream has it.
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
		j.mqtt.Ack()
		in.metrics.latency.Observe(time.Since(j.received).Seconds())
	}
}

// await returns true once JetStream has acknowledged j, retrying with
// backoff; false if ingest stopped first and the drain timeout passed.
func (in *Ingest) await(j *job) bool {
	backoff := in.cfg.RetryBackoff
	var drainDeadline <-chan time.Time
	for attempt := 0; ; attempt++ {
		var ack *jetstream.PubAck
		var err error
		if j.future != nil {
			select {
			case ack = <-j.future.Ok():
			case err = <-j.future.Err():
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), in.cfg.PublishTimeout)
			ack, err = in.js.PublishMsg(ctx, j.msg)
			cancel()
		}
		if err == nil {
			in.count(j, ack)
			return true
		}
		in.metrics.errors.WithLabelValues("publish").Inc()
		if attempt == 0 || attempt%10 == 0 {
			in.log.Warn("JetStream publish failed; retrying", "subject", j.msg.Subject, "attempt", attempt+1, "err", err)
		}
		j.future = nil
		if drainDeadline == nil {
			select {
			case <-in.stopping:
				drainDeadline = time.After(in.cfg.DrainTimeout)
			default:
			}
		}
		select {
		case <-time.After(backoff):
		case <-drainDeadline:
			return false
		}
		backoff = min(backoff*2, in.cfg.MaxRetryBackoff)
	}
}

func (in *Ingest) count(j *job, ack *jetstream.PubAck) {
	switch {
	case j.reason != "":
		in.metrics.rejected.WithLabelValues(string(j.reason)).Inc()
	case ack != nil && ack.Duplicate:
		in.metrics.duplicates.Inc()
	default:
		in.metrics.accepted.Inc()
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
