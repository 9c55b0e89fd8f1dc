package storage

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Why the writer looks readings up before inserting them: the rollups'
// materialized view aggregates every block inserted into readings, so a
// reading inserted twice is counted twice in readings_1m even though
// readings itself collapses the copy under FINAL. The writer therefore
// keeps copies out of its inserts:
//   - copies within a batch are dropped when the batch is built;
//   - a reading JetStream delivers again (NumDelivered > 1: a writer died
//     between insert and acknowledgement, or an acknowledgement was lost),
//     and every reading of a batch whose insert failed (it may have landed
//     all the same), is looked up in readings and dropped if there;
//   - with CheckAll, every reading is looked up, which also catches copies
//     that JetStream holds twice (published again after its duplicate
//     window).

// storedAmong returns those of rds that readings holds already. The keys
// travel as an external table (a data block sent with the query), not as
// literals in the SQL: 18.16 parses thousands of tuple literals slowly,
// and the query text stays far below max_query_size. The conditions on
// device and ts let ClickHouse use the primary key (device, boot, seq,
// metric) and skip partitions before it tests the exact keys.
func storedAmong(ctx context.Context, conn driver.Conn, database string, rds []*reading) (map[readingKey]bool, error) {
	keys, err := ext.NewTable("batch_keys",
		ext.Column("device", "String"), ext.Column("boot", "UInt64"), ext.Column("seq", "UInt64"))
	if err != nil {
		return nil, fmt.Errorf("looking up %d readings: %w", len(rds), err)
	}
	minTS, maxTS := rds[0].r.TS/1000, rds[0].r.TS/1000
	for _, rd := range rds {
		minTS, maxTS = min(minTS, rd.r.TS/1000), max(maxTS, rd.r.TS/1000)
		if err := keys.Append(rd.key.device, rd.key.boot, rd.key.seq); err != nil {
			return nil, fmt.Errorf("looking up %d readings: %w", len(rds), err)
		}
	}
	q := fmt.Sprintf("SELECT device, boot, seq FROM %s.readings "+
		"WHERE device IN (SELECT device FROM batch_keys) "+
		"AND (device, boot, seq) IN (SELECT device, boot, seq FROM batch_keys) "+
		"AND ts >= toDateTime(%d) AND ts <= toDateTime(%d) GROUP BY device, boot, seq", database, minTS, maxTS)
	rows, err := conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(keys)), q)
	if err != nil {
		return nil, fmt.Errorf("looking up %d readings: %w", len(rds), err)
	}
	defer rows.Close()
	found := map[readingKey]bool{}
	for rows.Next() {
		var k readingKey
		if err := rows.Scan(&k.device, &k.boot, &k.seq); err != nil {
			return nil, fmt.Errorf("looking up %d readings: %w", len(rds), err)
		}
		found[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up %d readings: %w", len(rds), err)
	}
	return found, nil
}
