-- One row per (reading, metric): a reading of three metrics is three rows.
--
-- ReplacingMergeTree ordered by the reading's identity and the metric
-- collapses the rows of a reading delivered more than once (JetStream
-- delivers at least once), so that
--     SELECT count() FROM telemetry.readings FINAL
-- counts each (reading, metric) once. Without FINAL a query may still see
-- duplicates that background merges have not collapsed yet.
--
-- A duplicate lands in the same partition as the original (same ts), which
-- is what ReplacingMergeTree needs to collapse it. Partitions are days, so
-- old data can be dropped a day at a time (ClickHouse 18.16 has no TTL).
--
-- Columns:
--   region, device_type  from the subject telemetry.<region>.<type>.<device>
--   device, boot, seq    the reading's identity
--   ts                   when measured, to the second (DateTime; 18.16 has no DateTime64)
--   ts_ms                the same, unix milliseconds, as the device sent it
--   received_ms          unix milliseconds when ingest took it from MQTT (0 if unknown)
--   stored_at            when this row was inserted
CREATE TABLE IF NOT EXISTS {database}.readings
(
    region      String,
    device_type String,
    device      String,
    boot        UInt64,
    seq         UInt64,
    metric      String,
    value       Float64,
    ts          DateTime,
    ts_ms       UInt64,
    received_ms UInt64,
    stored_at   DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (device, boot, seq, metric);
