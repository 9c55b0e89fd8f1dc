-- stored_ms: unix milliseconds, on the writer's clock, when the writer sent
-- the row's batch to ClickHouse. stored_at (the server's now(), whole
-- seconds) cannot measure a latency against a 1 s target; stored_ms can:
--     stored_ms - ts_ms   device -> stored, with the device's clock in it
--
-- DEFAULT 0: rows stored before this migration, and inserts that do not
-- name the column (an older writer), hold 0, meaning unknown.
--
-- Appended after stored_at, so the columns before it keep their positions.
-- The rollups' view (0002) names the columns it reads, so it is unchanged.
--
-- No IF NOT EXISTS: 18.16 does not parse it for ADD COLUMN; Migrate takes
-- "column with this name already exists" as applied (see migrate.go).
ALTER TABLE {database}.readings
    ADD COLUMN stored_ms UInt64 DEFAULT 0;
