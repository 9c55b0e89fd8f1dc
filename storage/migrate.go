package storage

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Schema changes are the files migrations/NNNN_name.sql, applied in order of
// NNNN at start and recorded in <database>.schema_migrations. A file is
// never edited once released: a change is a new file. Rules for the SQL:
//   - {database} stands for Config.Database;
//   - statements end with ';' at the end of a line, and lines starting
//     with "--" are comments (the native protocol takes one statement per
//     query, so the file is split there);
//   - write statements that can run twice (IF NOT EXISTS): a migration
//     applied but not recorded, because the writer died in between, runs
//     again on the next start;
//   - except ALTER TABLE ... ADD COLUMN, whose IF NOT EXISTS 18.16 does not
//     parse: write it without, one column per statement, and Migrate takes
//     ClickHouse's "column with this name already exists" as applied;
//   - it must run on ClickHouse 18.16 and on current releases: no
//     DateTime64, now64, Map, TTL, toStartOfInterval or LowCardinality.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version    uint32
	name       string
	statements []string
}

// migrations parses the embedded files.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, p := range names {
		base := strings.TrimSuffix(path.Base(p), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", p)
		}
		b, err := migrationFiles.ReadFile(p)
		if err != nil {
			return nil, err
		}
		stmts := splitStatements(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s has no statements", p)
		}
		for i, s := range stmts {
			// Two in one statement: if the first exists already, the
			// second is not added, and the error taken as applied hides it.
			if len(addColumn.FindAllString(s, -1)) > 1 {
				return nil, fmt.Errorf("migration %s, statement %d: one ADD COLUMN per statement", p, i+1)
			}
		}
		ms = append(ms, migration{version: uint32(v), name: base, statements: stmts})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version) - int(b.version) })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// addColumn finds the ADD COLUMN of an ALTER TABLE statement.
var addColumn = regexp.MustCompile(`(?i)\bADD\s+COLUMN\b`)

// columnExists reports whether err is ClickHouse refusing an ADD COLUMN
// because the table has the column already: "Cannot add column X: column
// with this name already exists", code 44 (ILLEGAL_COLUMN) on 18.16, 15
// (DUPLICATE_COLUMN) on current releases.
func columnExists(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == 44 || ex.Code == 15) &&
		strings.Contains(ex.Message, "column with this name already exists")
}

// splitStatements drops "--" comment lines and splits at lines ending in ';'.
func splitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(sql) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(t, ";") {
			if s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"); strings.TrimSpace(s) != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrate creates database if needed and applies the migrations it has not
// recorded yet, in order. Running it again does nothing. It returns the
// versions it applied.
func Migrate(ctx context.Context, conn driver.Conn, database string) ([]uint32, error) {
	if !identifier.MatchString(database) {
		return nil, fmt.Errorf("migrating: database %q: want letters, digits and underscores", database)
	}
	ms, err := migrations()
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + database,
		"CREATE TABLE IF NOT EXISTS " + database + ".schema_migrations " +
			"(version UInt32, name String, applied_at DateTime) " +
			"ENGINE = ReplacingMergeTree() ORDER BY version",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("migrating %s: %w", database, err)
		}
	}
	done := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrating %s: reading applied versions: %w", database, err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrating %s: reading applied versions: %w", database, err)
		}
		done[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrating %s: reading applied versions: %w", database, err)
	}

	var applied []uint32
	for _, m := range ms {
		if done[m.version] {
			continue
		}
		for i, s := range m.statements {
			err := conn.Exec(ctx, strings.ReplaceAll(s, "{database}", database))
			if err != nil && !(addColumn.MatchString(s) && columnExists(err)) {
				return applied, fmt.Errorf("migration %s, statement %d: %w", m.name, i+1, err)
			}
		}
		// Recorded through a batch: an INSERT with inline VALUES hangs on
		// 18.16 over the native protocol.
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+".schema_migrations (version, name, applied_at)")
		if err != nil {
			return applied, fmt.Errorf("recording migration %s: %w", m.name, err)
		}
		if err := b.Append(m.version, m.name, time.Now()); err != nil {
			b.Close()
			return applied, fmt.Errorf("recording migration %s: %w", m.name, err)
		}
		if err := b.Send(); err != nil {
			return applied, fmt.Errorf("recording migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}
