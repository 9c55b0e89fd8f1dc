package stream

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LagCollector exports the replication lag between every pair of regions
// as Prometheus gauges, asking the regions at most once per interval.
type LagCollector struct {
	status   func(context.Context) []RegionStatus
	interval time.Duration

	mu   sync.Mutex
	last []RegionStatus
	at   time.Time

	lagMsgs, lagSecs, connected, state, readings *prometheus.Desc
	bytes, budget, unstored, dropped             *prometheus.Desc
}

// StatusInterval is how long the programs keep a status of the regions
// (the LagCollector's interval) and how often the dashboard asks for one:
// with Reaches, a cut or a heal shows within about twice this.
const StatusInterval = 500 * time.Millisecond

// NewLagCollector reports what status returns, cached for interval.
func NewLagCollector(status func(context.Context) []RegionStatus, interval time.Duration) *LagCollector {
	return &LagCollector{
		status:   status,
		interval: interval,
		lagMsgs: prometheus.NewDesc("telemetry_replication_lag_messages",
			"Readings of region `from` that region `to` does not hold yet.", []string{"from", "to"}, nil),
		lagSecs: prometheus.NewDesc("telemetry_replication_lag_seconds",
			"How much of region `from`'s history region `to` misses, in seconds.", []string{"from", "to"}, nil),
		connected: prometheus.NewDesc("telemetry_replication_connected",
			"1 while region `to` is receiving from region `from`.", []string{"from", "to"}, nil),
		state: prometheus.NewDesc("telemetry_replication_state",
			"1 for the state region `to`'s source of region `from` is in (up, idle, catching up, down), 0 for the others.", []string{"from", "to", "state"}, nil),
		readings: prometheus.NewDesc("telemetry_region_readings",
			"Readings held in the region's READINGS stream.", []string{"region"}, nil),
		bytes: prometheus.NewDesc("telemetry_region_readings_bytes",
			"Bytes held in the region's READINGS stream; at telemetry_region_readings_budget_bytes the oldest readings make room.", []string{"region"}, nil),
		budget: prometheus.NewDesc("telemetry_region_readings_budget_bytes",
			"The byte limit of the region's READINGS stream.", []string{"region"}, nil),
		unstored: prometheus.NewDesc("telemetry_region_unstored",
			"Readings in the region's READINGS that storage's consumer there has not acknowledged.", []string{"region"}, nil),
		dropped: prometheus.NewDesc("telemetry_region_dropped_unstored",
			"Readings the region's READINGS dropped before storage stored them, until storage moves past the gap: non-zero means readings are being lost.", []string{"region"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lagMsgs
	ch <- c.lagSecs
	ch <- c.connected
	ch <- c.state
	ch <- c.readings
	ch <- c.bytes
	ch <- c.budget
	ch <- c.unstored
	ch <- c.dropped
}

// Collect implements prometheus.Collector.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.Statuses(context.Background()) {
		if !st.Reachable {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.readings, prometheus.GaugeValue, float64(st.Readings), st.Region)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes), st.Region)
		ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(st.MaxBytes), st.Region)
		if st.Storage != nil {
			ch <- prometheus.MustNewConstMetric(c.unstored, prometheus.GaugeValue, float64(st.Storage.Unstored), st.Region)
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.GaugeValue, float64(st.Storage.Dropped), st.Region)
		}
		for _, src := range st.Sources {
			ch <- prometheus.MustNewConstMetric(c.lagMsgs, prometheus.GaugeValue, float64(src.LagMessages), src.From, st.Region)
			if src.LagSeconds >= 0 {
				ch <- prometheus.MustNewConstMetric(c.lagSecs, prometheus.GaugeValue, src.LagSeconds, src.From, st.Region)
			}
			up := 0.0
			if src.Connected {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, up, src.From, st.Region)
			for _, state := range LinkStates {
				v := 0.0
				if state == src.State {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, src.From, st.Region, state)
			}
		}
	}
}

// Statuses returns the cached statuses, refreshed when older than the
// interval.
func (c *LagCollector) Statuses(ctx context.Context) []RegionStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || time.Since(c.at) >= c.interval {
		c.last, c.at = c.status(ctx), time.Now()
	}
	return c.last
}
