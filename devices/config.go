package devices

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"time"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// Defaults used for zero fields of Config.
const (
	DefaultBroker             = "tcp://127.0.0.1:1883"
	DefaultDevices            = 30
	DefaultRate               = 100
	DefaultQoS                = 1
	DefaultMaxInflight        = 16
	DefaultMaxBacklog         = 64
	DefaultTick               = 10 * time.Millisecond
	DefaultConnectTimeout     = 5 * time.Second
	DefaultConnectAttempts    = 5
	DefaultConnectConcurrency = 32
	DefaultDrainTimeout       = 5 * time.Second
	DefaultKeepAlive          = 30 * time.Second
)

// MaxClockSkew bounds Config.ClockSkew: a minute inside the protocol's
// tolerance of clocks ahead (protocol.DefaultMaxSkew).
const MaxClockSkew = protocol.DefaultMaxSkew - time.Minute

// maxIDPrefix leaves room in a device id (63 characters at most) for the
// type's prefix and the device number.
const maxIDPrefix = 40

// MaxDevices bounds Config.Devices; device ids stay well within the
// protocol's 63 characters far beyond it.
const MaxDevices = 1_000_000

// Config configures a Fleet. Zero fields take the defaults above, so a test
// can set only what it cares about.
type Config struct {
	// Broker is the MQTT broker's URL (tcp://, ssl://, ws://, wss://, mqtt://
	// or mqtts://).
	Broker string
	// FleetSecret is what each device's own MQTT password is derived from
	// (internal/devicecred); default deploy.DemoFleetSecret, a DEMO
	// DEFAULT. A device logs in as <region>/<device-type>/<device-id>,
	// with its device id as client id; the broker lets it publish only on
	// its own topic.
	FleetSecret string
	// Regions the devices are spread over, round-robin.
	Regions []string
	// Types are the device types the devices are spread over, round-robin
	// within each region; default every type in Types().
	Types []string
	// Devices is how many devices to simulate.
	Devices int
	// FirstDevice is the index of the first of them in a larger fleet
	// (default 0): a fleet split over several processes gives each a
	// disjoint range, and device i of the range is, in id, region, type,
	// sensor and behaviours, device FirstDevice+i of the whole fleet.
	FirstDevice int
	// Rate is the total readings per second across the fleet.
	Rate float64
	// Duration is how long to publish; 0 publishes until the context is
	// cancelled. With a Duration the fleet publishes exactly
	// floor(Rate*Duration) readings unless some are skipped.
	Duration time.Duration
	// RampUp, when positive, raises the rate linearly from 0 to Rate over
	// its length, part of Duration: a run then publishes
	// floor(Rate*(Duration-RampUp/2)) readings.
	RampUp time.Duration
	// QoS of the publishes: 1 (the default, what the product promises) or
	// 2. QoS 0 is not offered: the simulator counts acknowledgements, and
	// QoS 0 has none.
	QoS byte
	// Seed makes the sensor models deterministic.
	Seed int64
	// MaxInflight is how many publishes of one device may await their
	// PUBACK; at the limit the device waits (see MaxBacklog).
	MaxInflight int
	// MaxBacklog is how many due readings a waiting device may owe; due
	// readings beyond it are skipped (never generated, so no sequence
	// number is lost) and counted in Stats.Skipped.
	MaxBacklog int
	// Boot of every device; 0 means the current unix time in seconds.
	Boot uint64
	// IDPrefix is put before every device id (bench- makes bench-th-00001),
	// so that two fleets on one broker never share device ids (nor MQTT
	// client ids, which are the device ids: the broker would disconnect one
	// device for the other) and a ledger can pick one fleet's readings. Lower-case letters, digits and dashes,
	// not starting with a dash; it should end with one.
	IDPrefix string

	// Behaviours of the devices, each a chance per reading from 0 (off) to
	// 1, drawn from a random source of each device's own (deterministic
	// under Seed, apart from the sensors'):
	//
	// Reboots: the device restarts before the reading: a new boot (the
	// larger of boot+1 and the current unix time in seconds) and seq from
	// 1. The connection stays up (the modem keeps it) and readings of the
	// previous boot still unacknowledged are published again as they are.
	Reboots float64
	// Duplicates: the reading is published a second time right after the
	// first, as a device that gave up waiting for its PUBACK would.
	Duplicates float64
	// Reorder: the reading and the next are published in swapped order.
	Reorder float64
	// ClockSkew, when positive, sets each device's clock off by a fixed
	// amount drawn uniformly from -ClockSkew to +ClockSkew; readings carry
	// the skewed time. At most MaxClockSkew, so that skewed readings stay
	// inside the pipeline's time window: timestamps outside it are what
	// Chaos's stale and future messages are for.
	ClockSkew time.Duration
	// Chaos is the share of messages, 0 to 1, that are hostile instead of
	// readings: payloads built from the schema to break it, each with the
	// reason code the pipeline must dead-letter it under (see ChaosCases).
	// They take the place of readings within Rate.
	Chaos float64

	// Tick is how often the scheduler hands out due readings.
	Tick time.Duration
	// ConnectTimeout bounds one connection attempt of a device.
	ConnectTimeout time.Duration
	// ConnectAttempts bounds how often a device tries to connect, with
	// exponential backoff in between, before Run gives up.
	ConnectAttempts int
	// ConnectConcurrency bounds how many devices connect at once, so that
	// thousands of devices do not storm the broker.
	ConnectConcurrency int
	// DrainTimeout bounds how long devices wait, when stopping, for the
	// PUBACKs of what they published (and, at the end of Duration, to
	// publish what they still owe).
	DrainTimeout time.Duration
	// KeepAlive is the MQTT keep-alive of each client.
	KeepAlive time.Duration

	// AckLatency, if set, is called with the publish-to-PUBACK latency of
	// every acknowledged reading (not of hostile messages), from the
	// device's goroutine: it must be quick. The load test's histograms
	// take them from here.
	AckLatency func(time.Duration)
}

// withDefaults returns c with zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if len(c.Regions) == 0 {
		c.Regions = stream.DefaultRegions
	}
	if len(c.Types) == 0 {
		c.Types = Types()
	}
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.QoS == 0 {
		c.QoS = DefaultQoS
	}
	if c.FleetSecret == "" {
		c.FleetSecret = deploy.DemoFleetSecret
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ConnectAttempts == 0 {
		c.ConnectAttempts = DefaultConnectAttempts
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = DefaultConnectConcurrency
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	return c
}

// Validate checks the configuration, zero fields taken as their defaults,
// without touching the network.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("devices: "+format, args...))
	}
	if err := validateBroker(c.Broker); err != nil {
		bad("%w", err)
	}
	for _, r := range c.Regions {
		if !protocol.ValidName(r) {
			bad("region %q: want 1 to 63 lower-case letters, digits and dashes, not starting with a dash", r)
		}
	}
	if dup := firstDuplicate(c.Regions); dup != "" {
		bad("region %q listed twice", dup)
	}
	for _, t := range c.Types {
		if !slices.Contains(Types(), t) {
			bad("device type %q: want one of %v", t, Types())
		}
	}
	if dup := firstDuplicate(c.Types); dup != "" {
		bad("device type %q listed twice", dup)
	}
	if c.Devices < 0 || c.Devices > MaxDevices {
		bad("devices %d: want 1 to %d", c.Devices, MaxDevices)
	}
	if c.FirstDevice < 0 || c.FirstDevice+c.Devices > MaxDevices {
		bad("first device %d: want 0 to %d less the devices", c.FirstDevice, MaxDevices)
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		bad("rate %v: want a positive number of readings per second", c.Rate)
	}
	if c.Duration < 0 {
		bad("duration %v: want 0 (until stopped) or more", c.Duration)
	}
	if c.RampUp < 0 || c.Duration > 0 && c.RampUp > c.Duration {
		bad("ramp-up %v: want 0 to the duration (%v)", c.RampUp, c.Duration)
	}
	if c.QoS != 1 && c.QoS != 2 {
		bad("qos %d: want 1 or 2", c.QoS)
	}
	// MQTT packet ids are 16 bits per client.
	if c.MaxInflight < 0 || c.MaxInflight > math.MaxUint16 {
		bad("max inflight %d: want 1 to %d", c.MaxInflight, math.MaxUint16)
	}
	if c.IDPrefix != "" && (len(c.IDPrefix) > maxIDPrefix || !protocol.ValidName(c.IDPrefix)) {
		bad("id prefix %q: want up to %d lower-case letters, digits and dashes, not starting with a dash", c.IDPrefix, maxIDPrefix)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"reboots", c.Reboots}, {"duplicates", c.Duplicates}, {"reorder", c.Reorder}, {"chaos", c.Chaos}} {
		if !(p.v >= 0 && p.v <= 1) {
			bad("%s %v: want a chance from 0 to 1", p.name, p.v)
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
		bad("clock skew %v: want 0 to %v (readings must stay inside the pipeline's time window)", c.ClockSkew, MaxClockSkew)
	}
	if c.Reorder > 0 && c.MaxInflight == 1 {
		bad("reorder needs max inflight 2 or more")
	}
	if c.MaxBacklog < 0 {
		bad("max backlog %d: want 1 or more", c.MaxBacklog)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"tick", c.Tick}, {"connect timeout", c.ConnectTimeout}, {"drain timeout", c.DrainTimeout}, {"keep-alive", c.KeepAlive}} {
		if d.v < 0 {
			bad("%s %v: want a positive duration", d.name, d.v)
		}
	}
	if c.KeepAlive > 0 && c.KeepAlive < time.Second {
		bad("keep-alive %v: want 1s or more (MQTT counts it in seconds)", c.KeepAlive)
	}
	if c.ConnectAttempts < 0 {
		bad("connect attempts %d: want 1 or more", c.ConnectAttempts)
	}
	if c.ConnectConcurrency < 0 {
		bad("connect concurrency %d: want 1 or more", c.ConnectConcurrency)
	}
	return errors.Join(errs...)
}

func validateBroker(broker string) error {
	u, err := url.Parse(broker)
	if err != nil {
		return fmt.Errorf("broker %q: %w", broker, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("broker %q: want a URL like %s", broker, DefaultBroker)
	}
	if u.Host == "" {
		return fmt.Errorf("broker %q: no host; want a URL like %s", broker, DefaultBroker)
	}
	return nil
}

func firstDuplicate(xs []string) string {
	for i, x := range xs {
		if slices.Contains(xs[:i], x) {
			return x
		}
	}
	return ""
}
