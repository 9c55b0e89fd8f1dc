-- Per-minute rollups for the dashboard's history: per minute, region,
-- device type and metric, the count, min, max, average and quantiles of
-- the values, kept by a materialized view as each insert arrives.
--
-- The view sees every block inserted into readings, before any merge: a
-- duplicate row that reaches an insert is counted twice here even though
-- readings collapses it under FINAL. The writer therefore keeps duplicates
-- out of its inserts (see the package doc); the table's deduplication is
-- the safety net for the raw rows only.
--
-- AggregatingMergeTree keeps partial aggregate states (-State) that merges
-- combine; read them with the matching -Merge functions, grouping by the
-- key, since rows of one minute may not be merged yet:
--     SELECT minute, region, device_type,
--            countMerge(n), minMerge(lo), maxMerge(hi), avgMerge(mean),
--            quantilesMerge(0.5, 0.9, 0.95, 0.99)(q)
--     FROM telemetry.readings_1m
--     WHERE metric = 'temperature_c' AND minute >= now() - 1800
--     GROUP BY minute, region, device_type
--
-- The minute is of the reading's ts (when measured), so a reading stored
-- late lands in its own minute. Readings stored before this migration are
-- not rolled up.
CREATE TABLE IF NOT EXISTS {database}.readings_1m
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
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY (metric, region, device_type, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.readings_1m_mv
TO {database}.readings_1m
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
FROM {database}.readings
GROUP BY minute, region, device_type, metric;
