package storage_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/telemetry-demo/telemetry/storage"
)

// TestHistoryUserIsReadOnly checks that /api/history goes through the
// history user, and, on a migrated schema, that this user can read the
// telemetry database and nothing more: ClickHouse refuses it an insert, a
// drop, a create, and any other database. The writer's user is refused
// other databases too. (Every other storage test runs the writer as its
// own user, the default.)
func TestHistoryUserIsReadOnly(t *testing.T) {
	e := newEnv(t)
	// /api/history logs in as the history user, not as the writer: with
	// a wrong history password the writer works and the history does not.
	cfg := e.config()
	cfg.HistoryPassword = "wrong"
	w := start(t, cfg)
	e.waitStored(t, w, 0) // migrated and consuming
	var body struct{ Error string }
	if code := getJSON(t, "http://"+w.Addr()+"/api/history?metric=temperature_c", &body); code != http.StatusServiceUnavailable || !strings.Contains(body.Error, storage.DefaultHistoryUser) {
		t.Errorf("history with a wrong history password: %d %q, want 503 naming %s", code, body.Error, storage.DefaultHistoryUser)
	}
	reader, err := storage.DialHistory(storage.Config{ClickHouseAddr: e.ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var n uint64
	if err := reader.QueryRow(context.Background(), "SELECT count() FROM telemetry.readings_1m").Scan(&n); err != nil {
		t.Fatalf("the history user cannot read the rollups: %v", err)
	}

	// refused fails unless err is ClickHouse's refusal (not, say, a
	// network error).
	refused := func(what string, err error) {
		t.Helper()
		var ex *clickhouse.Exception
		switch {
		case err == nil:
			t.Errorf("%s: allowed", what)
		case !errors.As(err, &ex):
			t.Errorf("%s: failed, but not refused by ClickHouse: %v", what, err)
		default:
			t.Logf("%s: refused: %v", what, err)
		}
	}
	batch, err := reader.PrepareBatch(ctx, "INSERT INTO telemetry.readings (region, device_type, device, boot, seq, metric, value, ts, ts_ms, received_ms)")
	if err == nil {
		if err = batch.Append(region, "th", "th-1", uint64(1), uint64(1), "temperature_c", 1.0, time.Now(), uint64(0), uint64(0)); err == nil {
			err = batch.Send()
		}
	}
	refused("history user INSERT", err)
	refused("history user DROP", reader.Exec(ctx, "DROP TABLE telemetry.readings_1m"))
	refused("history user CREATE", reader.Exec(ctx, "CREATE TABLE telemetry.mine (x UInt8) ENGINE = Memory"))
	// A table of another database, made by the test server's
	// password-less default user.
	admin, err := clickhouse.Open(&clickhouse.Options{Addr: []string{e.ch.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Exec(ctx, "CREATE TABLE default.other (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	refused("history user reading database default", reader.QueryRow(context.Background(), "SELECT count() FROM default.other").Scan(&n))
	refused("writer reading database default", e.conn.QueryRow(context.Background(), "SELECT count() FROM default.other").Scan(&n))
	refused("writer dropping in database default", e.conn.Exec(ctx, "DROP TABLE default.other"))

	if n := e.count(t, true); n != 0 {
		t.Errorf("%d rows after the history user's insert, want 0", n)
	}
	if err := e.conn.QueryRow(context.Background(), "SELECT count() FROM telemetry.readings_1m").Scan(&n); err != nil {
		t.Errorf("readings_1m is gone after the history user's DROP: %v", err)
	}
}
