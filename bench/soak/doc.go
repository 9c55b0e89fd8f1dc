// Package soak is the soak sampler (`soak`, cmd/soak): like package bench
// it sits beside the pipeline, not in its flow, but it drives no load. It
// runs next to a long `telemetry demo` or `telemetry bench` and, every
// interval, samples what must not creep up over an hour:
//
//   - the RSS and CPU of the demo and of ClickHouse (from /proc; Linux only);
//   - the demo's Go goroutines and heap in use (its /metrics);
//   - the apparent size of each data directory (NATS regions, ClickHouse);
//   - ClickHouse's parts of the telemetry database, active (the live data)
//     and inactive (merged away, not yet deleted), from system.parts;
//   - the dashboard page, open in a headless Chromium tab for the whole
//     run: its JS heap and its DOM node count.
//
// Each sample is a row of a CSV file, flushed as it is taken, so that a run
// cut short still leaves its series. At the end the summary (Summarize)
// reads the CSV back and prints, per series, first, min, max and last; the
// trend test (the peak of minutes 15-30 against the peak of the last 15
// minutes); for data directories, whether the disk levelled off (the max
// of the last quarter of the run against the max of the third); and how
// much ClickHouse's data dir exceeds twice its live data. A sample that
// cannot be taken (nothing listens, no such process) is an empty cell and
// a log line, never the end of the run.
//
// Series names carry their kind and unit: <proc>_rss_mib, <proc>_cpu_cores,
// go_goroutines, go_heap_inuse_mib, disk_<name>_mib, ch_active_mib,
// ch_inactive_mib, ch_active_parts, ch_inactive_parts, page_heap_mib,
// page_dom_nodes. The summary relies on the disk_ prefix.
package soak
