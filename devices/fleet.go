package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/broker"
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
		d := newDeviceWith(cfg.IDPrefix, cfg.FirstDevice+i, region, typ, cfg.Boot, cfg.Seed)
		if cfg.ClockSkew > 0 {
			d.skew = time.Duration((2*d.rng.Float64() - 1) * float64(cfg.ClockSkew)).Round(time.Millisecond)
		}
		d.client = mqtt.NewClient(f.clientOptions(d))
		f.devices[i] = d
	}
	return f, nil
}

// place is the region and type of the fleet's device i. Region cycles
// fastest, type once per round of regions, so every region gets every
// type as soon as there are enough devices.
func (c Config) place(i int) (region, typ string) {
	return c.Regions[i%len(c.Regions)], c.Types[(i/len(c.Regions))%len(c.Types)]
}

// PasswordFile is a Mosquitto password file for the fleet cfg makes: the
// lines of base (the service users, may be empty), then one per device
// with its password under cfg.FleetSecret (broker.FleetPasswordFile), then
// one per device of each of more (other fleets under the same secret, such
// as a load test's).
func PasswordFile(cfg Config, base []byte, more ...Config) ([]byte, error) {
	var users []string
	for _, c := range append([]Config{cfg}, more...) {
		if c.FleetSecret != cfg.FleetSecret {
			return nil, errors.New("password file: every fleet needs the same fleet secret")
		}
		u, err := Usernames(c)
		if err != nil {
			return nil, err
		}
		users = append(users, u...)
	}
	return broker.FleetPasswordFile(base, cfg.FleetSecret, users)
}

// WritePasswordFile writes PasswordFile(cfg, the lines of the file base,
// more...) to the file out (mode 0600), or to stdout when out is empty;
// base may be empty too (`telemetry mqtt passwd`).
func WritePasswordFile(cfg Config, base, out string, stdout io.Writer, more ...Config) error {
	var lines []byte
	if base != "" {
		b, err := os.ReadFile(base)
		if err != nil {
			return fmt.Errorf("reading the base password file: %w", err)
		}
		lines = b
	}
	file, err := PasswordFile(cfg, lines, more...)
	if err != nil {
		return err
	}
	if out == "" {
		_, err = stdout.Write(file)
		return err
	}
	if err := os.WriteFile(out, file, 0o600); err != nil {
		return fmt.Errorf("writing the password file: %w", err)
	}
	return nil
}

// Usernames lists the MQTT user name of every device of a fleet of cfg
// (internal/devicecred), in the fleet's order: what a broker without the
// fleet secret, Mosquitto, needs in its password file.
func Usernames(cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	out := make([]string, cfg.Devices)
	for i := range out {
		region, typ := cfg.place(cfg.FirstDevice + i)
		out[i] = devicecred.Username(region, typ, deviceID(cfg.IDPrefix, typ, cfg.FirstDevice+i))
	}
	return out, nil
}

// Config returns the configuration in use, defaults and Boot filled in.
func (f *Fleet) Config() Config { return f.cfg }

func (f *Fleet) clientOptions(d *device) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(f.cfg.Broker).
		// The device logs in as itself (internal/devicecred): the broker
		// lets it publish only on its own topic, and its client id must
		// be its device id.
		SetClientID(d.id).
		SetUsername(d.user).
		SetPassword(devicecred.Password(f.cfg.FleetSecret, d.user)).
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
			f.logError("device lost its connection; will reconnect", d, err)
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

	f.log.Info("connecting devices", "devices", len(f.devices), "broker", f.cfg.Broker)
	if err := f.connectAll(ctx); err != nil {
		for _, d := range f.devices {
			f.disconnect(d)
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

// connectAll connects the devices, ConnectConcurrency at a time, and fails
// on the first device that cannot connect within ConnectAttempts.
func (f *Fleet) connectAll(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.ConnectConcurrency)
	for _, d := range f.devices {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { return f.connect(ctx, d, uint(f.cfg.ConnectAttempts)) })
	}
	return g.Wait()
}

// connect connects one device, retrying with exponential backoff up to
// tries times (0: until ctx is done).
func (f *Fleet) connect(ctx context.Context, d *device, tries uint) error {
	attempt := func() (struct{}, error) {
		tok := d.client.Connect()
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
			f.logError("device could not connect; retrying", d, err, "retry_in", next.Round(time.Millisecond))
		}))
	if err != nil {
		return fmt.Errorf("connecting device %s to %s (%s): %w", d.id, f.cfg.Broker, connectHint(err), err)
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

// disconnect closes the device's connection, if open or being reopened.
func (f *Fleet) disconnect(d *device) {
	if d.client.IsConnected() {
		d.client.Disconnect(disconnectQuiesce)
	}
}

// logError logs at most one error per errorLogEvery across the fleet, so
// that a broker outage with thousands of devices stays readable; the
// counters have the full story.
func (f *Fleet) logError(msg string, d *device, err error, args ...any) {
	now := time.Now().UnixNano()
	last := f.lastErrorLog.Load()
	if now-last < int64(errorLogEvery) || !f.lastErrorLog.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn(msg, append([]any{"device", d.id, "err", err}, args...)...)
}
