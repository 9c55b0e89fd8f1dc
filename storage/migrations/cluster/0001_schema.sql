-- The schema of migrations/0001-0003 for a ClickHouse cluster of shards
-- and replicas (Config.Cluster), created on every member by ON CLUSTER
-- statements: a cluster's own sequence of versions, recorded in each
-- member's schema_migrations. A change to the schema is a new file here as
-- well as one in migrations/.
--
-- Per member, the local tables:
--   readings_local     ReplicatedReplacingMergeTree: the replicas of a shard
--                      copy one another's inserts through ZooKeeper; the
--                      same key as readings in one server, so FINAL collapses
--                      a reading stored twice within its shard;
--   readings_1m_local  the rollups, replicated the same way, kept by
--                      readings_1m_mv from the inserts into readings_local.
--
-- And over them, the tables everything else names (the writer's inserts,
-- its look-ups, the ledger, the history):
--   readings           Distributed over readings_local, sharded by device:
--                      a device's readings, and every copy of one, land on
--                      the same shard, so deduplication never needs two;
--   readings_1m        Distributed over readings_1m_local, read only (the
--                      view fills each shard's readings_1m_local).
--
-- {shard} and {replica} are each member's macros (its config.d); the
-- ZooKeeper path holds the database, so that two databases on one cluster
-- do not share a replication log.
CREATE TABLE IF NOT EXISTS {database}.readings_local ON CLUSTER {cluster}
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
    stored_at   DateTime DEFAULT now(),
    stored_ms   UInt64 DEFAULT 0
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/readings', '{replica}')
PARTITION BY toYYYYMMDD(ts)
ORDER BY (device, boot, seq, metric);

CREATE TABLE IF NOT EXISTS {database}.readings ON CLUSTER {cluster}
AS {database}.readings_local
ENGINE = Distributed({cluster}, {database}, readings_local, cityHash64(device));

CREATE TABLE IF NOT EXISTS {database}.readings_1m_local ON CLUSTER {cluster}
(
    minute      DateTime,
    region      String,
    device_type String,
    metric      String,
    n           AggregateFunction(count),
    lo          AggregateFunction(min, Float64),
    hi          AggregateFunction(max, Float64),
    mean        AggregateFunction(avg, Float64),
    q           AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/readings_1m', '{replica}')
PARTITION BY toYYYYMMDD(minute)
ORDER BY (metric, region, device_type, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.readings_1m_mv ON CLUSTER {cluster}
TO {database}.readings_1m_local
AS SELECT
    toStartOfMinute(ts) AS minute,
    region,
    device_type,
    metric,
    countState() AS n,
    minState(value) AS lo,
    maxState(value) AS hi,
    avgState(value) AS mean,
    quantilesState(0.5, 0.9, 0.95, 0.99)(value) AS q
FROM {database}.readings_local
GROUP BY minute, region, device_type, metric;

CREATE TABLE IF NOT EXISTS {database}.readings_1m ON CLUSTER {cluster}
AS {database}.readings_1m_local
ENGINE = Distributed({cluster}, {database}, readings_1m_local);
