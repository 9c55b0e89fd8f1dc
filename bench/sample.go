package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/telemetry-demo/telemetry/stream"
)

// metricsSource returns the metric families of a part of the pipeline.
type metricsSource func(ctx context.Context) (map[string]*dto.MetricFamily, error)

// httpMetrics reads a Prometheus /metrics endpoint.
func httpMetrics(url string) metricsSource {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) (map[string]*dto.MetricFamily, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("reading metrics at %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("reading metrics at %s: %s", url, resp.Status)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("parsing metrics of %s: %w", url, err)
		}
		return mfs, nil
	}
}

// gathererMetrics reads an in-process registry.
func gathererMetrics(g prometheus.Gatherer) metricsSource {
	return func(context.Context) (map[string]*dto.MetricFamily, error) {
		list, err := g.Gather()
		if err != nil {
			return nil, err
		}
		out := map[string]*dto.MetricFamily{}
		for _, mf := range list {
			out[mf.GetName()] = mf
		}
		return out, nil
	}
}

// sumOf adds up every series of a counter, gauge or untyped family;
// false when there is no such family.
func sumOf(mfs map[string]*dto.MetricFamily, name string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, true
}

// sampler watches the pipeline while a run lasts: what queues at each
// stage, and the pipeline process's CPU and memory.
type sampler struct {
	regions  []string
	rs       stream.Regions
	pipeline metricsSource // broker, ingest and storage metrics; nil: not read
	process  metricsSource // a process's process_* metrics; nil: not read

	peak BacklogReport

	cpu0, cpu1   float64
	t0, t1       time.Time
	maxRSS       float64
	processError error
}

const sampleEvery = 500 * time.Millisecond

// run samples until ctx is done.
func (s *sampler) run(ctx context.Context) {
	s.peak.Replication = map[string]uint64{}
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *sampler) sample(ctx context.Context) {
	if s.rs != nil {
		for _, st := range stream.Status(ctx, s.rs, s.regions) {
			for _, src := range st.Sources {
				pair := st.Region + "<-" + src.From
				s.peak.Replication[pair] = max(s.peak.Replication[pair], src.LagMessages)
			}
		}
	}
	if s.pipeline != nil {
		if mfs, err := s.pipeline(ctx); err == nil {
			if v, ok := sumOf(mfs, "telemetry_broker_publishers_held"); ok {
				s.peak.PublishersHeld = max(s.peak.PublishersHeld, v)
			}
			if v, ok := sumOf(mfs, "telemetry_ingest_inflight"); ok {
				s.peak.IngestInflight = max(s.peak.IngestInflight, v)
			}
			if v, ok := sumOf(mfs, "telemetry_storage_consumer_pending"); ok {
				s.peak.StoragePending = max(s.peak.StoragePending, uint64(v))
			}
		}
	}
	if s.process != nil {
		mfs, err := s.process(ctx)
		if ctx.Err() != nil {
			return // the run is over: this sample is not one
		}
		if err != nil {
			s.processError = err
			return
		}
		cpu, ok1 := sumOf(mfs, "process_cpu_seconds_total")
		rss, ok2 := sumOf(mfs, "process_resident_memory_bytes")
		if !ok1 || !ok2 {
			s.processError = fmt.Errorf("no process_cpu_seconds_total or process_resident_memory_bytes in the process metrics")
			return
		}
		now := time.Now()
		if s.t0.IsZero() {
			s.cpu0, s.t0 = cpu, now
		}
		s.cpu1, s.t1 = cpu, now
		s.maxRSS = max(s.maxRSS, rss)
	}
}

// processReport is the pipeline process's CPU and memory over the
// samples, nil when it was not read.
func (s *sampler) processReport() *ProcessReport {
	if s.process == nil || s.t1.Sub(s.t0) <= 0 {
		return nil
	}
	secs := s.t1.Sub(s.t0).Seconds()
	return &ProcessReport{Cores: (s.cpu1 - s.cpu0) / secs, MaxRSSMiB: s.maxRSS / (1 << 20), SampledFor: secs}
}

// bottleneck names the stage that limited the run, from what queued where.
func bottleneck(r Report) string {
	bl := r.Backlog
	rate := max(r.StoredRate, 1)
	if r.Skipped > 0 || r.AchievedRate < 0.95*r.TargetRate {
		if bl.PublishersHeld > 0 {
			return fmt.Sprintf("ingest: the broker held up to %.0f devices back because ingest had too much in flight (up to %.0f readings awaiting JetStream)", bl.PublishersHeld, bl.IngestInflight)
		}
		p := r.Latency[HopAck]
		return fmt.Sprintf("the broker or the fleet itself: devices' in-flight windows were full (PUBACK p99 %.0f ms), %d due readings skipped", p.P99, r.Skipped)
	}
	stage, worst := "", uint64(0)
	for _, pair := range sortedKeys(bl.Replication) {
		if n := bl.Replication[pair]; n > worst {
			stage, worst = "replication "+pair+", lag", n
		}
	}
	if bl.StoragePending > worst {
		stage, worst = "storage, messages pending in its consumer", bl.StoragePending
	}
	// JetStream counts messages; a v2 message carries a batch.
	readings := float64(worst) * float64(max(r.ReadingsPerMessage, 1))
	if stage == "" || readings/rate < 1 {
		return fmt.Sprintf("none: every stage kept up with %.0f readings/s (the largest backlog was under a second of readings)", r.TargetRate)
	}
	if r.ReadingsPerMessage > 1 {
		return fmt.Sprintf("%s peaked at %d messages (about %.0f readings, %.1f s of readings)", stage, worst, readings, readings/rate)
	}
	return fmt.Sprintf("%s peaked at %d messages (%.1f s of readings)", stage, worst, readings/rate)
}

// byLabel reads a counter family by one label's value, keeping the values
// keep accepts; nil when there is no such family.
func byLabel(mfs map[string]*dto.MetricFamily, name, label string, keep func(string) bool) map[string]uint64 {
	mf, ok := mfs[name]
	if !ok {
		return nil
	}
	out := map[string]uint64{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && keep(lp.GetValue()) {
				out[lp.GetValue()] += uint64(m.GetCounter().GetValue())
			}
		}
	}
	return out
}
