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
	// DefaultBatchWait is how long the oldest reading of a partial batch
	// waits for more (Config.BatchWait): a second, so that a device
	// reporting every few seconds still reports at once, and a fast one
	// fills its batch long before.
	DefaultBatchWait = time.Second
)

// MaxBatchWait bounds Config.BatchWait: a reading held longer would show
// as a stall on the dashboard, far inside the protocol's stale window.
const MaxBatchWait = time.Minute

// MaxClockSkew bounds Config.ClockSkew: a minute inside the protocol's
// tolerance of clocks ahead (protocol.DefaultMaxSkew).
const MaxClockSkew = protocol.DefaultMaxSkew - time.Minute

// maxDeviceID is the longest device id the protocol allows.
const maxDeviceID = 63

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
	// Batch is how many readings a device puts in one message. 0 or 1:
	// protocol v1, a message per reading. N > 1: protocol v2, a message
	// carries up to N consecutive readings of one boot of its device
	// (at most protocol.MaxBatchReadings, and the largest readings of
	// Types must fit protocol.MaxBatchBytes). Rate stays in readings per
	// second, so a device sends Rate/Devices/N messages a second. A
	// partial batch is sent after BatchWait, before the device reboots,
	// when a reading has other metric names than the batch's, and when
	// the fleet stops: nothing measured is left unsent.
	Batch int
	// BatchWait bounds how long a batch's first reading waits for the
	// batch to fill (default DefaultBatchWait, at most MaxBatchWait).
	BatchWait time.Duration
	// Gateway, above 0, puts the devices behind gateways of at most
	// Gateway devices (up to MaxGatewayDevices) each, of one region and
	// type: one MQTT connection per gateway, logged in as the gateway
	// (internal/devicecred), publishing for each of its devices on the
	// device's own topic. A device behind a gateway has an id beginning
	// with the gateway's, <prefix><type>-gw-<n>-<device number>. 0: each
	// device has its own connection and credential. A fleet split over
	// processes (FirstDevice) must split it at whole blocks of gateways,
	// regions x types x Gateway devices, so that no gateway connects
	// twice.
	Gateway int
	// Seed makes the sensor models deterministic.
	Seed int64
	// MaxInflight is how many publishes (messages: with Batch, batches)
	// of one device may await their PUBACK; at the limit the device waits
	// (see MaxBacklog).
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
	// first, as a device that gave up waiting for its PUBACK would. With
	// Batch, a chance per message: the batch is published twice.
	Duplicates float64
	// Reorder: the reading and the next are published in swapped order.
	// With Batch, a chance per message: the batch and the next message.
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
	// A hostile message takes the place of one reading within Rate; with
	// Batch it is drawn as a batch begins, so that it stays a share of
	// messages, and the cases include protocol v2's.
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
	// PUBACKs of what they published (and to publish their partial
	// batches and, at the end of Duration, what they still owe).
	DrainTimeout time.Duration
	// KeepAlive is the MQTT keep-alive of each client.
	KeepAlive time.Duration

	// AckLatency, if set, is called with the latency of every
	// acknowledged reading (not of hostile messages) from when it was
	// measured to its message's PUBACK, from the device's goroutine: it
	// must be quick. A batch's PUBACK gives one value per reading, so the
	// time a reading waited for its batch shows. The load test's
	// histograms take them from here.
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
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
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
	if c.Gateway < 0 || c.Gateway > MaxGatewayDevices {
		bad("gateway %d: want 0 (a connection per device) to %d devices per gateway", c.Gateway, MaxGatewayDevices)
	} else if c.Gateway > 0 {
		if c.Gateway*c.MaxInflight > math.MaxUint16 {
			bad("gateway %d x max inflight %d: a gateway's devices may have at most %d messages in flight on its one connection", c.Gateway, c.MaxInflight, math.MaxUint16)
		}
		if c.FirstDevice%c.gatewayBlock() != 0 {
			bad("first device %d: with gateways, want a multiple of %d (regions x types x devices per gateway), so that no gateway is split", c.FirstDevice, c.gatewayBlock())
		}
	}
	if err := checkBatch(c.Batch, c.Types, typeMetrics); err != nil {
		bad("%w", err)
	}
	if c.BatchWait < 0 || c.BatchWait > MaxBatchWait {
		bad("batch wait %v: want up to %v", c.BatchWait, MaxBatchWait)
	}
	return errors.Join(errs...)
}

// ReadingsPerMessage is how many readings a device's message carries at
// the steady rate: 1 with protocol v1; with Batch, the batch, or fewer when
// a device's readings come further apart than lets BatchWait fill it. The
// load test takes a device's messages as due every ReadingsPerMessage
// readings when it corrects its latency histograms for coordinated
// omission: a batch's first readings, which waited for the last, are not
// a stall.
func (c Config) ReadingsPerMessage() int {
	c = c.withDefaults()
	if c.Batch <= 1 || c.Rate <= 0 || c.Devices <= 0 {
		return 1
	}
	interval := float64(c.Devices) / c.Rate // seconds between two readings of a device
	return min(c.Batch, int(c.BatchWait.Seconds()/interval)+1)
}

// checkBatch checks a Batch against the protocol's bounds: at most
// protocol.MaxBatchReadings readings, and a batch of the largest readings
// of each of types (metricsOf gives their metric names) within
// protocol.MaxBatchBytes.
func checkBatch(batch int, types []string, metricsOf func(typ string) []string) error {
	if batch < 0 || batch > protocol.MaxBatchReadings {
		return fmt.Errorf("batch %d: want 1 (protocol v1, a message per reading) to %d readings per protocol v2 message (--batch)", batch, protocol.MaxBatchReadings)
	}
	if batch <= 1 {
		return nil
	}
	for _, t := range types {
		names := metricsOf(t)
		if names == nil {
			continue // an unknown type, refused on its own
		}
		if n := maxBatchBytes(names, batch); n > protocol.MaxBatchBytes {
			most := batch
			for most > 1 && maxBatchBytes(names, most) > protocol.MaxBatchBytes {
				most--
			}
			return fmt.Errorf("batch %d: a batch of %d %s readings may take %d bytes, over the protocol's %d (--batch %d at most)",
				batch, batch, t, n, protocol.MaxBatchBytes, most)
		}
	}
	return nil
}

// Longest encodings, in bytes, of what a batch holds: a uint64, an int64
// and a float64 (strconv's shortest form, as protocol.AppendEncodeBatch
// writes it: -2.2250738585072014e-308).
const (
	maxUintLen  = 20
	maxIntLen   = 20
	maxFloatLen = 24
)

// maxBatchBytes is the longest protocol v2 encoding of n readings with the
// metrics names: the longest device id, boot, seq, ts and values.
func maxBatchBytes(names []string, n int) int {
	size := len(`{"v":2,"device":"`) + maxDeviceID + len(`","boot":`) + maxUintLen + len(`,"seq":`) + maxUintLen +
		len(`,"metrics":[`) + len(`],"readings":[`) + len(`]}`)
	for i, name := range names {
		if i > 0 {
			size++
		}
		size += len(name) + 2
	}
	row := len(`[`) + maxIntLen + len(names)*(1+maxFloatLen) + len(`]`)
	return size + n*row + (n - 1)
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
