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
// A cluster (Config.Cluster) has its own files, migrations/cluster/, whose
// statements run ON CLUSTER {cluster} and so on every member; see their
// first file for the layout.
//
//go:embed migrations/*.sql migrations/cluster/*.sql
var migrationFiles embed.FS

// Directories of the migrations, for one server and for a cluster.
const (
	serverMigrations  = "migrations"
	clusterMigrations = "migrations/cluster"
)

type migration struct {
	version    uint32
	name       string
	statements []string
}

// migrations parses the embedded files of dir.
func migrations(dir string) ([]migration, error) {
	names, err := fs.Glob(migrationFiles, dir+"/*.sql")
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
	return MigrateCluster(ctx, conn, database, "")
}

// MigrateCluster is Migrate for a member of cluster: the database and the
// tables are created on every member (ON CLUSTER), from the cluster's own
// migrations. ClickHouse runs such a statement on each member through
// ZooKeeper and waits for them all, up to its distributed_ddl_task_timeout
// (180 s): a member down fails the migration, which the writer retries.
// An empty cluster is Migrate.
func MigrateCluster(ctx context.Context, conn driver.Conn, database, cluster string) ([]uint32, error) {
	if !identifier.MatchString(database) {
		return nil, fmt.Errorf("migrating: database %q: want letters, digits and underscores", database)
	}
	dir, on, engine := serverMigrations, "", "ReplacingMergeTree()"
	if cluster != "" {
		if !identifier.MatchString(cluster) {
			return nil, fmt.Errorf("migrating: cluster %q: want letters, digits and underscores", cluster)
		}
		// Every member is a replica of one schema_migrations, so a writer
		// that talks to another member finds the versions applied.
		dir, on = clusterMigrations, " ON CLUSTER "+cluster
		engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/all/" + database + "/schema_migrations', '{replica}')"
	}
	ms, err := migrations(dir)
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	// Up to date already: nothing to create. On a cluster this matters:
	// an ON CLUSTER statement waits for every member, so a writer started
	// while one is down would wait for it.
	done, err := appliedVersions(ctx, conn, database)
	if err != nil || !appliedAll(ms, done) {
		for _, q := range []string{
			"CREATE DATABASE IF NOT EXISTS " + database + on,
			"CREATE TABLE IF NOT EXISTS " + database + ".schema_migrations" + on + " " +
				"(version UInt32, name String, applied_at DateTime) " +
				"ENGINE = " + engine + " ORDER BY version",
		} {
			if err := conn.Exec(ctx, q); err != nil {
				return nil, fmt.Errorf("migrating %s: %w", database, err)
			}
		}
		if done, err = appliedVersions(ctx, conn, database); err != nil {
			return nil, fmt.Errorf("migrating %s: %w", database, err)
		}
	}

	var applied []uint32
	for _, m := range ms {
		if done[m.version] {
			continue
		}
		for i, s := range m.statements {
			err := conn.Exec(ctx, strings.NewReplacer("{database}", database, "{cluster}", cluster).Replace(s))
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

// appliedVersions reads the versions recorded in database.schema_migrations.
func appliedVersions(ctx context.Context, conn driver.Conn, database string) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading applied versions: %w", err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading applied versions: %w", err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading applied versions: %w", err)
	}
	return done, nil
}

func appliedAll(ms []migration, done map[uint32]bool) bool {
	for _, m := range ms {
		if !done[m.version] {
			return false
		}
	}
	return true
}
