package storage

import (
	"context"
	"fmt"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// LedgerRow is what ClickHouse holds of one device's boot: the conservation
// account that the bench command checks against what the devices sent.
type LedgerRow struct {
	Region string `json:"region"`
	Device string `json:"device"`
	Boot   uint64 `json:"boot"`
	// Readings counts distinct sequence numbers stored, so a reading
	// delivered twice counts once.
	Readings uint64 `json:"readings"`
	MinSeq   uint64 `json:"min_seq"`
	MaxSeq   uint64 `json:"max_seq"`
	// Missing is how many sequence numbers between MinSeq and MaxSeq are
	// not stored: lost readings, or readings still on their way.
	Missing uint64 `json:"missing"`
}

// LedgerOptions narrows a ledger.
type LedgerOptions struct {
	// Database holds the readings table; default "telemetry".
	Database string
	// DevicePrefix keeps only devices whose id starts with it, for example
	// the bench's own devices. Lower-case letters, digits and dashes.
	DevicePrefix string
}

// Ledger returns, per (device, boot), the distinct readings stored and their
// sequence range, ordered by device and boot. It counts with uniqExact
// rather than FINAL: duplicates not yet collapsed by merges count once
// either way, and it reads less.
func Ledger(ctx context.Context, conn driver.Conn, opts LedgerOptions) ([]LedgerRow, error) {
	q, args, err := ledgerQuery(opts)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []LedgerRow
	for rows.Next() {
		var r LedgerRow
		if err := rows.Scan(&r.Region, &r.Device, &r.Boot, &r.Readings, &r.MinSeq, &r.MaxSeq); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		if span := r.MaxSeq - r.MinSeq + 1; span > r.Readings {
			r.Missing = span - r.Readings
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return out, nil
}

// ledgerQuery checks opts and returns the ledger's SQL and arguments.
func ledgerQuery(opts LedgerOptions) (string, []any, error) {
	if opts.Database == "" {
		opts.Database = DefaultDatabase
	}
	if !identifier.MatchString(opts.Database) {
		return "", nil, fmt.Errorf("ledger: database %q: want letters, digits and underscores", opts.Database)
	}
	q := "SELECT any(region), device, boot, uniqExact(seq), min(seq), max(seq) FROM " + opts.Database + ".readings"
	var args []any
	if opts.DevicePrefix != "" {
		// Valid names have no LIKE wildcards, so the prefix needs no escaping.
		if !protocol.ValidName(opts.DevicePrefix) {
			return "", nil, fmt.Errorf("ledger: device prefix %q: want lower-case letters, digits and dashes", opts.DevicePrefix)
		}
		q += " WHERE device LIKE ?"
		args = append(args, opts.DevicePrefix+"%")
	}
	return q + " GROUP BY device, boot ORDER BY device, boot", args, nil
}

// Ledger is the package's Ledger on the writer's database, run by its
// read pool (readpool.go): on a read-only connection of its own, apart
// from the inserts, at most readSlots ledger and history queries at once,
// and identical ledgers asked within readCacheAge answered by one query.
// When no slot frees in time it returns an error wrapping ErrBusy.
func (w *Writer) Ledger(ctx context.Context, devicePrefix string) ([]LedgerRow, error) {
	a, err := w.ledger(ctx, devicePrefix)
	if err != nil {
		return nil, err
	}
	return slices.Clone(a.val.([]LedgerRow)), nil // a's rows are shared
}

// ledger is Writer.Ledger as the read pool shares it: the rows and their
// JSON, {"ledger":[...]}.
func (w *Writer) ledger(ctx context.Context, devicePrefix string) (*answer, error) {
	opts := LedgerOptions{Database: w.cfg.Database, DevicePrefix: devicePrefix}
	if _, _, err := ledgerQuery(opts); err != nil {
		return nil, err // not worth a slot
	}
	return w.reads.do(ctx, "ledger", devicePrefix, func(ctx context.Context) (*answer, error) {
		rows, err := Ledger(ctx, w.reads.conn, opts)
		if err != nil {
			return nil, err
		}
		if rows == nil {
			rows = []LedgerRow{}
		}
		return newAnswer(rows, map[string]any{"ledger": rows}), nil
	})
}
