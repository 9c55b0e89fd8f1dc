// Package storage is the pipeline's last stage: it stores every reading in
// ClickHouse, once, however often JetStream delivers it.
//
//	devices -> MQTT -> ingest -> JetStream READINGS --> storage --> ClickHouse
//
// A Writer consumes its region's READINGS stream (which holds every
// region's readings) through a durable pull consumer, turns each reading
// into one row per metric, inserts the rows a batch at a time, and
// acknowledges the messages only once the insert succeeded. A failed insert
// is retried with backoff, never acknowledged meanwhile: the backlog waits
// in JetStream. Redelivered readings are inserted again and collapsed by
// the table (ReplacingMergeTree on device, boot, seq, metric), so
// `SELECT count() FROM telemetry.readings FINAL` counts each once.
//
// At start the Writer applies the schema migrations (migrations/*.sql). It
// serves its state at /api/status and, for the bench's conservation check,
// what ClickHouse holds per device and boot at /api/ledger (also Ledger).
package storage
