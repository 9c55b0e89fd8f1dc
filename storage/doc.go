// Package storage is the pipeline's last stage: it stores every reading in
// ClickHouse, once, however often JetStream delivers it, and keeps the
// per-minute rollups the dashboard's history is drawn from.
//
//	devices -> MQTT -> ingest -> JetStream READINGS --> storage --> ClickHouse
//
// A Writer consumes its region's READINGS stream (which holds every
// region's readings) through a durable pull consumer, turns each reading
// into one row per metric, inserts the rows a batch at a time, and
// acknowledges the messages only once the insert succeeded. A failed insert
// is retried with backoff, never acknowledged meanwhile: the backlog waits
// in JetStream.
//
// Effectively once. Table readings is a ReplacingMergeTree on (device,
// boot, seq, metric), so `SELECT count() FROM telemetry.readings FINAL`
// counts each row once. The rollups (readings_1m, kept by a materialized
// view) cannot collapse copies: the view aggregates every inserted block.
// So copies are kept out of the inserts: a copy of a reading already in the
// batch is dropped, and a reading that may be stored already (JetStream
// delivered it before, or an insert holding it failed) is looked up in
// readings first and dropped if there (see dedupe.go; Config.CheckAll looks
// up every reading). The table's deduplication stays the safety net.
//
// At start the Writer applies the schema migrations (migrations/*.sql). It
// serves over HTTP (see Writer.Handler):
//
//   - /api/status: its state (Status);
//   - /api/ledger: per (device, boot) what ClickHouse holds, for the bench's
//     conservation check (also Ledger);
//   - /api/history?metric=M&minutes=N[&region=R][&device_type=D]: per-minute
//     series of a metric by region and device type from the rollups (History,
//     also QueryHistory);
//   - /metrics and /healthz.
//
// docs/STORAGE.md describes the schema, the JSON and measured throughput.
package storage
