package storage

import "github.com/prometheus/client_golang/prometheus"

// metrics are the writer's Prometheus collectors, registered on its own
// registry (see Writer.Registry).
type metrics struct {
	rows          prometheus.Counter
	readings      prometheus.Counter
	batchReadings prometheus.Histogram
	batchRows     prometheus.Histogram
	insertSeconds prometheus.Histogram
	insertErrors  prometheus.Counter
	decodeErrors  prometheus.Counter
	discarded     prometheus.Counter
	pending       prometheus.Gauge
	lastInsert    prometheus.Gauge
	lookedUp      prometheus.Counter
	dupBatch      prometheus.Counter
	dupStored     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_rows_inserted_total",
			Help: "Rows (one per reading and metric) inserted into ClickHouse."}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_readings_inserted_total",
			Help: "Readings inserted into ClickHouse."}),
		batchReadings: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemetry_storage_batch_readings",
			Help:    "Readings per insert.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000}}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemetry_storage_batch_rows",
			Help:    "Rows (one per reading and metric) per insert.",
			Buckets: []float64{1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000}}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telemetry_storage_insert_seconds",
			Help:    "Duration of one successful store of a batch: looking up possible duplicates, then the insert.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_insert_errors_total",
			Help: "Failed insert attempts (each is retried)."}),
		discarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_discarded_total",
			Help: "Readings READINGS dropped (its byte budget or max age) before storage read them: lost, listed by the ledger."}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_decode_errors_total",
			Help: "Messages that cannot become rows, acknowledged and skipped (they stay in the stream)."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemetry_storage_consumer_pending",
			Help: "Readings in the stream not yet stored: undelivered plus delivered and unacknowledged."}),
		lastInsert: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telemetry_storage_last_insert_timestamp_seconds",
			Help: "Unix time of the last successful insert."}),
		lookedUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemetry_storage_readings_looked_up_total",
			Help: "Readings looked up in ClickHouse before an insert because they may be stored already (redelivered, or in a failed insert)."}),
	}
	dups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "telemetry_storage_duplicates_dropped_total",
		Help: "Copies of readings kept out of inserts, by where the original was found: in the same batch, or stored already."},
		[]string{"found"})
	m.dupBatch, m.dupStored = dups.WithLabelValues("batch"), dups.WithLabelValues("stored")
	reg.MustRegister(m.rows, m.readings, m.batchReadings, m.insertSeconds, m.insertErrors, m.decodeErrors, m.discarded, m.pending, m.lastInsert, m.batchRows, m.lookedUp, dups)
	return m
}
