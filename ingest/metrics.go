package ingest

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics are ingest's Prometheus collectors, labelled with the region.
type Metrics struct {
	labels      prometheus.Labels
	received    prometheus.Counter
	redelivered prometheus.Counter
	accepted    prometheus.Counter
	readings    prometheus.Counter
	duplicates  prometheus.Counter
	// dupDevices counts duplicates by device: a forged reading that takes
	// a real one's identity first shows up as the real one's duplicate,
	// on its device. Bounded: see maxDuplicateDevices.
	dupDevices *prometheus.CounterVec
	dupMu      sync.Mutex
	dupCount   map[string]uint64 // the devices with a series
	rejected   *prometheus.CounterVec
	// dlDups: dead letters DEADLETTER already held.
	dlDups      prometheus.Counter
	isolated    prometheus.Counter
	errors      *prometheus.CounterVec
	inflight    prometheus.Gauge
	latency     prometheus.Histogram
	loginFailed prometheus.Counter
	up          []prometheus.Collector
	blocked     prometheus.Collector
}

// newMetrics makes the collectors of one ingest: every series carries its
// region, and its instance (label ingest) when it has one, so that several
// instances can share one /metrics (telemetry demo --ingests).
func newMetrics(region, instance string) *Metrics {
	labels := prometheus.Labels{"region": region}
	if instance != "" {
		labels["ingest"] = instance
	}
	return &Metrics{
		labels: labels,
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_received_total", Help: "MQTT messages taken from the broker.", ConstLabels: labels}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_redelivered_total", Help: "MQTT messages the broker sent again (DUP flag), after a reconnect or a restart of ingest.", ConstLabels: labels}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_accepted_total", Help: "Valid messages (a v1 reading, or a v2 batch) stored in READINGS.", ConstLabels: labels}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_readings_total", Help: "Readings in the messages of accepted_total: one per v1 message, a batch's count per v2 message.", ConstLabels: labels}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_duplicates_total", Help: "Messages JetStream already held (same Nats-Msg-Id: device, boot, seq or a batch's seq range).", ConstLabels: labels}),
		dupDevices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemetry_ingest_duplicates_by_device_total", Help: "Readings JetStream already held, by device: resends, redeliveries, or a reading forged with a real one's identity. The first 1,000 devices with one get a series; the rest count under device=\"other\".", ConstLabels: labels}, []string{"device"}),
		dupCount: map[string]uint64{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemetry_ingest_rejected_total", Help: "Payloads rejected, by reason (the protocol's, or publish_failed and internal_error): every rejection, redelivered messages included; those whose dead letter DEADLETTER already held are also in deadletter_duplicates_total.", ConstLabels: labels}, []string{"reason"}),
		dlDups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_deadletter_duplicates_total", Help: "Dead letters JetStream already held (same topic and bytes within DEADLETTER's duplicate window, e.g. a redelivered hostile message), so not stored again.", ConstLabels: labels}),
		isolated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_isolated_total", Help: "Messages JetStream refused permanently MaxAttempts times, replaced by a smaller dead letter instead of being retried forever.", ConstLabels: labels}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemetry_ingest_errors_total", Help: "Failed operations, by kind: publish (transient, retried), refused (JetStream refused the message), panic (decoding panicked).", ConstLabels: labels}, []string{"stage"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemetry_ingest_inflight", Help: "Messages published to JetStream and not yet acknowledged.", ConstLabels: labels}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "telemetry_ingest_publish_seconds", Help: "JetStream publish latency: from MQTT receipt to JetStream acknowledgement, retries included.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		loginFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_ingest_mqtt_connect_failures_total", Help: "Attempts to connect to the MQTT broker that failed: the broker unreachable or the login refused (the log says which).", ConstLabels: labels}),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	cs := append([]prometheus.Collector{m.received, m.redelivered, m.accepted, m.readings, m.duplicates, m.dupDevices, m.rejected, m.dlDups, m.isolated, m.errors, m.inflight, m.latency, m.loginFailed}, m.up...)
	if m.blocked != nil {
		cs = append(cs, m.blocked)
	}
	return cs
}

// blockedFor adds the gauge of how long publishing has been failing.
func (m *Metrics) blockedFor(seconds func() float64) {
	m.blocked = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telemetry_ingest_blocked_seconds", Help: "How long every publish to JetStream has been failing (a full stream, JetStream away); 0 while publishes succeed. /healthz fails once it reaches 2 s, with the reason.", ConstLabels: m.labels},
		seconds)
}

// connected adds the gauges of the connections readiness depends on.
func (m *Metrics) connected(nats, mqtt func() bool) {
	for link, up := range map[string]func() bool{"nats": nats, "mqtt": mqtt} {
		labels := prometheus.Labels{"link": link}
		for k, v := range m.labels {
			labels[k] = v
		}
		m.up = append(m.up, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telemetry_ingest_connected", Help: "1 while the connection (link: mqtt or nats) is up.", ConstLabels: labels},
			func() float64 {
				if up() {
					return 1
				}
				return 0
			}))
	}
}

// safeHeader keeps attacker-controlled text printable and short enough for
// a NATS header.
func safeHeader(s string) string {
	const max = 256
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			b.WriteString("?")
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// maxDuplicateDevices bounds the series of
// telemetry_ingest_duplicates_by_device_total: one per device that had a
// duplicate, up to this many; later devices count under "other".
const maxDuplicateDevices = 1000

// duplicate counts a reading JetStream already held for device.
func (m *Metrics) duplicate(device string) {
	m.duplicates.Inc()
	m.dupMu.Lock()
	if _, ok := m.dupCount[device]; ok || len(m.dupCount) < maxDuplicateDevices {
		m.dupCount[device]++
	} else {
		device = "other"
	}
	m.dupMu.Unlock()
	m.dupDevices.WithLabelValues(device).Inc()
}

// DuplicatesOf is how many of device's readings JetStream already held (0
// for a device counted under "other").
func (in *Ingest) DuplicatesOf(device string) uint64 {
	in.metrics.dupMu.Lock()
	defer in.metrics.dupMu.Unlock()
	return in.metrics.dupCount[device]
}

// Stats is a snapshot of ingest's counters.
type Stats struct {
	Received, Redelivered, Accepted, Duplicates, Isolated uint64
	// Readings are the readings of the Accepted messages.
	Readings uint64
	// DeadLetterDuplicates counts rejections whose dead letter DEADLETTER
	// already held; they are in Rejected too.
	DeadLetterDuplicates uint64
	Rejected             map[string]uint64
}

// Stats reads the counters, for the demo's console and for tests.
func (in *Ingest) Stats() Stats {
	m := in.metrics
	st := Stats{
		Received:    counterValue(m.received),
		Redelivered: counterValue(m.redelivered),
		Accepted:    counterValue(m.accepted),
		Readings:    counterValue(m.readings),
		Duplicates:  counterValue(m.duplicates),
		Isolated:    counterValue(m.isolated),
		Rejected:    map[string]uint64{},

		DeadLetterDuplicates: counterValue(m.dlDups),
	}
	ch := make(chan prometheus.Metric, 64)
	go func() { m.rejected.Collect(ch); close(ch) }()
	for pm := range ch {
		var d dto.Metric
		if pm.Write(&d) != nil {
			continue
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "reason" {
				st.Rejected[l.GetValue()] = uint64(d.GetCounter().GetValue())
			}
		}
	}
	return st
}

func counterValue(c prometheus.Counter) uint64 {
	var d dto.Metric
	if c.Write(&d) != nil {
		return 0
	}
	return uint64(d.GetCounter().GetValue())
}
