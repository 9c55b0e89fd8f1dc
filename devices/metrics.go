package devices

import "github.com/prometheus/client_golang/prometheus"

// metrics are the fleet's Prometheus metrics, on a registry of its own.
// Counters are read from the fleet's atomic counters when scraped.
type metrics struct {
	registry   *prometheus.Registry
	ackLatency prometheus.Histogram
}

func newMetrics(f *Fleet) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemetry_devices_ack_latency_seconds",
			Help:    "Time from measuring a reading to its PUBACK: with batches, one value per reading, its wait for the batch included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 100µs to ~2.4s
		}),
	}
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	gauge := func(name, help string, v func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v)
	}
	m.registry.MustRegister(
		m.ackLatency,
		counter("telemetry_devices_published_total", "Readings published, each counted once however often resent.", f.stats.sent.Load),
		counter("telemetry_devices_messages_total", "Messages that carried the published readings: one per reading with protocol v1, one per batch with v2.", f.stats.messages.Load),
		gauge("telemetry_devices_batched", "Readings measured into partial batches, not yet published.", func() float64 { return float64(f.stats.batched.Load()) }),
		counter("telemetry_devices_acked_total", "Readings acknowledged by the broker (PUBACK).", f.stats.acked.Load),
		counter("telemetry_devices_publish_errors_total", "Publish attempts that failed; the reading is published again after reconnecting.", f.stats.errors.Load),
		counter("telemetry_devices_resent_total", "Publish attempts of readings published before.", f.stats.resent.Load),
		counter("telemetry_devices_skipped_total", "Due readings skipped because a device's backlog was full.", f.stats.skipped.Load),
		gauge("telemetry_devices_inflight", "Readings published and not yet acknowledged.", func() float64 { return float64(f.Stats().InFlight) }),
		counter("telemetry_devices_connections_lost_total", "Device connections that dropped mid-run.", f.stats.connectionsLost.Load),
		gauge("telemetry_devices_connected", "Devices connected to the broker.", func() float64 { return float64(f.connected()) }),
		gauge("telemetry_devices_simulated", "Devices simulated.", func() float64 { return float64(len(f.devices)) }),
		gauge("telemetry_devices_target_rate", "Readings per second asked of the fleet.", func() float64 { return f.cfg.Rate }),
	)
	return m
}

// Registry returns the fleet's Prometheus registry, to be served at /metrics.
func (f *Fleet) Registry() *prometheus.Registry { return f.metrics.registry }
