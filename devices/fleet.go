package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// ErrRunning is returned by Run when the fleet has already been run or
// closed: a Fleet runs once.
var ErrRunning = errors.New("devices: fleet already run or closed")

// Connection backoff between attempts of one device.
const (
	connectBackoffInitial = 200 * time.Millisecond
	connectBackoffMax     = 5 * time.Second
	// disconnectQuiesce is how long a device lets its MQTT client finish
	// sending when it disconnects, in milliseconds.
	disconnectQuiesce = 250
	// errorLogEvery limits publish and connection errors in the log; the
	// rest are only counted.
	errorLogEvery = time.Second
)

// Fleet is a set of simulated devices publishing at a fleet-wide rate.
type Fleet struct {
	cfg     Config
	log     *slog.Logger
	devices []*device
	conns   []*link // the devices' connections: one each, or one per gateway
	stats   counters
	metrics *metrics

	started atomic.Int64 // unix nanoseconds publishing began; 0 before
	stopped atomic.Int64 // unix nanoseconds publishing ended; 0 before

	lastErrorLog atomic.Int64 // unix nanoseconds

	mu     sync.Mutex
	ran    bool
	closed bool
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns
}

// New builds the fleet: every device, its sensor and its MQTT client. It
// does no I/O; Run connects.
func New(cfg Config, logger *slog.Logger) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Boot == 0 {
		cfg.Boot = uint64(time.Now().Unix())
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		cfg:     cfg,
		log:     logger.With("component", "devices"),
		devices: make([]*device, cfg.Devices),
		done:    make(chan struct{}),
	}
	f.metrics = newMetrics(f)
	for i := range f.devices {
		region, typ := cfg.place(cfg.FirstDevice + i)
		j := cfg.FirstDevice + i
		d := newDeviceNamed(cfg.deviceIDAt(j, typ), j, region, typ, cfg.Boot, cfg.Seed)
		if cfg.ClockSkew > 0 {
			d.skew = time.Duration((2*d.rng.Float64() - 1) * float64(cfg.ClockSkew)).Round(time.Millisecond)
		}
		f.devices[i] = d
	}
	f.links()
	return f, nil
}

// place is the region and type of the fleet's device i. Region cycles
// fastest, type once per round of regions, so every region gets every
// type as soon as there are enough devices.
func (c Config) place(i int) (region, typ string) {
	return c.Regions[i%len(c.Regions)], c.Types[(i/len(c.Regions))%len(c.Types)]
}

// Config returns the configuration in use, defaults and Boot filled in.
func (f *Fleet) Config() Config { return f.cfg }

func (f *Fleet) clientOptions(l *link) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(f.cfg.Broker).
		// The device or gateway logs in as itself (internal/devicecred):
		// the broker lets it publish only on its own topic, or its
		// devices', and its client id must be its device id, or its user
		// name.
		SetClientID(l.id).
		SetUsername(l.user).
		SetPassword(devicecred.Password(f.cfg.FleetSecret, l.user)).
		SetCleanSession(true).
		SetConnectTimeout(f.cfg.ConnectTimeout).
		SetWriteTimeout(f.cfg.ConnectTimeout).
		SetKeepAlive(f.cfg.KeepAlive).
		// The device connects and reconnects itself (see connect) and
		// publishes unacknowledged readings again: the client's own
		// reconnect completes the tokens of unacknowledged publishes
		// without error before they are delivered (paho.mqtt.golang
		// issue 563), which would make the acknowledged count a guess.
		SetConnectRetry(false).
		SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			f.stats.connectionsLost.Add(1)
			f.logError("connection lost; will reconnect", l.id, err)
		})
}

// Run connects every device, then publishes until ctx is cancelled or, with
// a Duration, every reading has been published; devices then wait up to
// DrainTimeout for their PUBACKs and disconnect. It returns nil when stopped
// by ctx or done, and an error when devices could not connect.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.ran || f.closed {
		f.mu.Unlock()
		return ErrRunning
	}
	f.ran = true
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	f.mu.Unlock()
	defer close(f.done)
	defer cancel()

	f.log.Info("connecting devices", "devices", len(f.devices), "connections", len(f.conns), "broker", f.cfg.Broker)
	if err := f.connectAll(ctx); err != nil {
		for _, l := range f.conns {
			f.disconnect(l)
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	f.log.Info("devices publishing", "rate", f.cfg.Rate, "duration", f.cfg.Duration, "boot", f.cfg.Boot)

	finished := make(chan struct{})
	var wg sync.WaitGroup
	for _, d := range f.devices {
		wg.Go(func() { d.run(ctx, f, finished) })
	}
	f.schedule(ctx, finished)
	f.stopped.Store(time.Now().UnixNano())
	wg.Wait()

	s := f.Stats()
	f.log.Info("devices stopped", "sent", s.Sent, "acked", s.Acked, "errors", s.Errors,
		"skipped", s.Skipped, "unacknowledged", s.InFlight, "elapsed", s.Elapsed.Round(time.Millisecond))
	return nil
}

// Close stops Run, if running, and waits for it to return. It may be called
// more than once.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	ran, cancel := f.ran, f.cancel
	f.mu.Unlock()
	if ran {
		cancel()
		<-f.done
	}
	return nil
}

// connectAll connects the devices (or gateways), ConnectConcurrency at a
// time, and fails on the first that cannot connect within ConnectAttempts.
func (f *Fleet) connectAll(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.ConnectConcurrency)
	for _, l := range f.conns {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { return f.ensureConnected(ctx, l, uint(f.cfg.ConnectAttempts)) })
	}
	return g.Wait()
}

// connect connects one device or gateway, retrying with exponential
// backoff up to tries times (0: until ctx is done).
func (f *Fleet) connect(ctx context.Context, l *link, tries uint) error {
	attempt := func() (struct{}, error) {
		tok := l.client.Connect()
		select {
		case <-tok.Done():
			return struct{}{}, tok.Error()
		case <-ctx.Done():
			// Let the attempt finish (within ConnectTimeout) so that it
			// cannot connect behind our back after Run has returned.
			<-tok.Done()
			return struct{}{}, backoff.Permanent(ctx.Err())
		}
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     connectBackoffInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         connectBackoffMax,
	}
	_, err := backoff.Retry(ctx, attempt,
		backoff.WithBackOff(b),
		backoff.WithMaxTries(tries),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			f.logError("could not connect; retrying", l.id, err, "retry_in", next.Round(time.Millisecond))
		}))
	if err != nil {
		return fmt.Errorf("connecting %s to %s (%s): %w", l.id, f.cfg.Broker, connectHint(err), err)
	}
	return nil
}

// connectHint says what a failed connection most likely means: nothing
// listening, or a broker that closed the connection before answering,
// which is how the embedded broker refuses connections beyond its bounds
// (docs/SECURITY.md).
func connectHint(err error) string {
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return "the broker refused the device's login: is --fleet-secret the broker's?"
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return "the broker is busy: it takes no more clients"
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return "the broker closed the connection before answering: it takes no more connections from this address, " +
			"or no more clients (the demo takes 5,000 from one address: --mqtt-max-per-address)"
	}
	return "is the broker running?"
}

// disconnect closes a connection, if open or being reopened.
func (f *Fleet) disconnect(l *link) {
	if l.client.IsConnected() {
		l.client.Disconnect(disconnectQuiesce)
	}
}

// logError logs at most one error per errorLogEvery across the fleet, so
// that a broker outage with thousands of devices stays readable; the
// counters have the full story.
func (f *Fleet) logError(msg string, who string, err error, args ...any) {
	now := time.Now().UnixNano()
	last := f.lastErrorLog.Load()
	if now-last < int64(errorLogEvery) || !f.lastErrorLog.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn(msg, append([]any{"client", who, "err", err}, args...)...)
}
