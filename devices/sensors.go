package devices

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Device types the simulator knows.
const (
	TypeThermostat = "thermostat"
	TypeVibration  = "vibration"
	TypeTracker    = "tracker"
)

// Types returns every device type, in the order devices are assigned them.
func Types() []string { return []string{TypeThermostat, TypeVibration, TypeTracker} }

// idPrefix is the first part of the id of a device of each type.
var idPrefix = map[string]string{
	TypeThermostat: "th",
	TypeVibration:  "vb",
	TypeTracker:    "tr",
}

// Metric names, as they appear in payloads and in ClickHouse.
const (
	MetricTemperature = "temperature_c"
	MetricHumidity    = "humidity_pct"
	MetricBattery     = "battery_pct"
	MetricRMS         = "rms_mm_s"
	MetricLat         = "lat"
	MetricLon         = "lon"
	MetricSpeed       = "speed_kmh"
)

// typeMetrics returns the metric names, in order, of the readings of a
// device of type typ (what a fresh sensor of the type reports: every
// reading of a type has the same, which TestSensorRanges checks), or nil
// for an unknown type.
func typeMetrics(typ string) []string {
	if _, ok := idPrefix[typ]; !ok {
		return nil
	}
	var names []string
	for _, m := range newSensor(typ, "", 0, 0).read(nil, time.Unix(0, 0)) {
		names = append(names, m.Name)
	}
	return names
}

// sensor produces the measurements of one device. It is not safe for
// concurrent use: each device owns its sensor.
type sensor interface {
	// read appends the metrics measured at now to dst. Successive calls
	// must pass non-decreasing times.
	read(dst []protocol.Metric, now time.Time) []protocol.Metric
}

// newSensor returns the model for a device of type typ in region, whose
// randomness comes from seed and the device's index, so that a fleet is
// reproducible device by device.
func newSensor(typ, region string, seed int64, index int) sensor {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(index)))
	switch typ {
	case TypeThermostat:
		return newThermostat(rng, region)
	case TypeVibration:
		return newVibration(rng)
	case TypeTracker:
		return newTracker(rng, region)
	}
	panic("devices: unknown device type " + typ) // Config.Validate rules this out
}

// regionInfo places a region on the globe: its UTC offset drives the
// thermostats' day, its city the trackers' start.
type regionInfo struct {
	utcOffsetHours float64
	lat, lon       float64
}

var knownRegions = map[string]regionInfo{
	"us-east":  {-5, 40.71, -74.01}, // New York
	"eu-west":  {0, 53.35, -6.26},   // Dublin
	"ap-south": {5.5, 19.08, 72.88}, // Mumbai
}

// placeRegion returns the known place of region, or a made-up but stable one.
func placeRegion(region string) regionInfo {
	if info, ok := knownRegions[region]; ok {
		return info
	}
	h := fnv.New64a()
	h.Write([]byte(region))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0))
	return regionInfo{
		utcOffsetHours: math.Round(rng.Float64()*24) - 12,
		lat:            rng.Float64()*100 - 45,
		lon:            rng.Float64()*360 - 180,
	}
}

// battery drains a little with every reading sent, as radios do, and is
// replaced when nearly flat.
type battery struct {
	pct, drain float64
}

func newBattery(rng *rand.Rand) battery {
	return battery{pct: 60 + 40*rng.Float64(), drain: 0.0005 + 0.0015*rng.Float64()}
}

func (b *battery) next() float64 {
	b.pct -= b.drain
	if b.pct < 5 {
		b.pct = 100
	}
	return round(b.pct, 2)
}

// thermostat: indoor temperature following the local day (warmest mid
// afternoon), humidity moving against it, a draining battery.
type thermostat struct {
	rng       *rand.Rand
	utcOffset float64 // hours
	base, amp float64 // °C
	humBase   float64 // %
	bat       battery
}

func newThermostat(rng *rand.Rand, region string) *thermostat {
	return &thermostat{
		rng:       rng,
		utcOffset: placeRegion(region).utcOffsetHours,
		base:      19 + 4*rng.Float64(),
		amp:       1 + 2*rng.Float64(),
		humBase:   35 + 20*rng.Float64(),
		bat:       newBattery(rng),
	}
}

func (s *thermostat) read(dst []protocol.Metric, now time.Time) []protocol.Metric {
	hour := math.Mod(float64(now.UnixMilli())/3.6e6+s.utcOffset, 24)
	temp := s.base + s.amp*math.Cos(2*math.Pi*(hour-15)/24) + 0.15*s.rng.NormFloat64()
	hum := clamp(s.humBase-2*(temp-s.base)+0.5*s.rng.NormFloat64(), 5, 95)
	return append(dst,
		protocol.Metric{Name: MetricTemperature, Value: round(temp, 2)},
		protocol.Metric{Name: MetricHumidity, Value: round(hum, 1)},
		protocol.Metric{Name: MetricBattery, Value: s.bat.next()},
	)
}

// vibration: a machine's vibration velocity (RMS) around its own baseline,
// with occasional spikes lasting a few readings, and a housing temperature
// that follows the vibration a little.
type vibration struct {
	rng         *rand.Rand
	base        float64 // mm/s
	tempBase    float64 // °C
	temp        float64 // °C, slow random walk
	spikeLeft   int
	spikeFactor float64
}

// spikeChance is the chance per reading that a vibration spike starts.
const spikeChance = 0.005

func newVibration(rng *rand.Rand) *vibration {
	tb := 35 + 10*rng.Float64()
	return &vibration{rng: rng, base: 1 + 2*rng.Float64(), tempBase: tb, temp: tb}
}

func (s *vibration) read(dst []protocol.Metric, _ time.Time) []protocol.Metric {
	if s.spikeLeft == 0 && s.rng.Float64() < spikeChance {
		s.spikeLeft = 3 + s.rng.IntN(8)
		s.spikeFactor = 4 + 6*s.rng.Float64()
	}
	rms := s.base * math.Abs(1+0.1*s.rng.NormFloat64())
	if s.spikeLeft > 0 {
		rms *= s.spikeFactor
		s.spikeLeft--
	}
	// Mean-reverting walk, pulled up by vibration above the baseline.
	target := s.tempBase + 0.5*(rms-s.base)
	s.temp += 0.05*(target-s.temp) + 0.05*s.rng.NormFloat64()
	return append(dst,
		protocol.Metric{Name: MetricRMS, Value: round(rms, 3)},
		protocol.Metric{Name: MetricTemperature, Value: round(s.temp, 2)},
	)
}

// tracker: a vehicle near its region's city, wandering with a slowly turning
// heading, speeding up, slowing down and now and then stopping.
type tracker struct {
	rng      *rand.Rand
	lat, lon float64 // degrees
	heading  float64 // radians, 0 = north
	speed    float64 // km/h
	stopLeft int     // readings left standing still
	last     time.Time
	bat      battery
}

// maxTrackerStep bounds the time one position update may cover, so that a
// pause of the simulator does not teleport trackers.
const maxTrackerStep = time.Minute

func newTracker(rng *rand.Rand, region string) *tracker {
	p := placeRegion(region)
	return &tracker{
		rng:     rng,
		lat:     p.lat + 0.2*(rng.Float64()-0.5),
		lon:     p.lon + 0.2*(rng.Float64()-0.5),
		heading: 2 * math.Pi * rng.Float64(),
		speed:   20 + 40*rng.Float64(),
		bat:     newBattery(rng),
	}
}

func (s *tracker) read(dst []protocol.Metric, now time.Time) []protocol.Metric {
	dt := 0.0
	if !s.last.IsZero() {
		dt = min(max(now.Sub(s.last), 0), maxTrackerStep).Hours()
	}
	s.last = now
	switch {
	case s.stopLeft > 0:
		s.stopLeft--
		s.speed = 0
	case s.rng.Float64() < 0.002:
		s.stopLeft = 5 + s.rng.IntN(20)
		s.speed = 0
	default:
		s.speed = clamp(s.speed+3*s.rng.NormFloat64()+1, 0, 110)
	}
	s.heading = math.Mod(s.heading+0.1*s.rng.NormFloat64()+2*math.Pi, 2*math.Pi)
	km := s.speed * dt
	s.lat = clamp(s.lat+km*math.Cos(s.heading)/111.2, -85, 85)
	s.lon += km * math.Sin(s.heading) / (111.2 * math.Cos(s.lat*math.Pi/180))
	s.lon = math.Mod(s.lon+540, 360) - 180
	return append(dst,
		protocol.Metric{Name: MetricLat, Value: round(s.lat, 5)},
		protocol.Metric{Name: MetricLon, Value: round(s.lon, 5)},
		protocol.Metric{Name: MetricSpeed, Value: round(s.speed, 1)},
		protocol.Metric{Name: MetricBattery, Value: s.bat.next()},
	)
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }

// round keeps payloads short and readable: sensors report a few decimals.
func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}
