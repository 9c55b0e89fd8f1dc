package chserver_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

func TestFind(t *testing.T) {
	argv, err := chserver.Find()
	if errors.Is(err, chserver.ErrNotFound) {
		if testharness.InCI() {
			t.Fatalf("Find: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	if _, err := os.Stat(argv[0]); err != nil {
		t.Fatalf("Find returned %q, which does not exist: %v", argv, err)
	}
	if base := filepath.Base(argv[0]); base == "clickhouse" && (len(argv) != 2 || argv[1] != "server") {
		t.Fatalf("Find returned %q, want [clickhouse server]", argv)
	}
}

func TestStartKillRestartKeepsData(t *testing.T) {
	argv := testharness.RequireClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := chserver.Start(ctx, chserver.Options{Argv: argv, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })

	exec := func(q string) {
		t.Helper()
		conn := open(t, srv.Addr())
		defer conn.Close()
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	count := func() uint64 {
		t.Helper()
		conn := open(t, srv.Addr())
		defer conn.Close()
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM default.kept").Scan(&n); err != nil {
			t.Fatalf("counting: %v", err)
		}
		return n
	}
	exec("CREATE TABLE default.kept (n UInt64) ENGINE = MergeTree() ORDER BY n")
	// Inline VALUES through the native protocol hang on 18.16: the server
	// waits for data blocks. Inserts go through a batch.
	conn := open(t, srv.Addr())
	b, err := conn.PrepareBatch(ctx, "INSERT INTO default.kept (n)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Column(0).Append([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatalf("inserting: %v", err)
	}
	conn.Close()

	addr := srv.Addr()
	srv.Kill()
	if srv.Running() {
		t.Fatal("Running after Kill")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Kill", addr)
	}
	srv.Kill() // killing a killed server does nothing

	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if srv.Addr() != addr {
		t.Fatalf("restarted on %s, want the same address %s", srv.Addr(), addr)
	}
	if n := count(); n != 3 {
		t.Fatalf("after restart the table has %d rows, want 3", n)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	// Start again from the stopped server's options: same data, same ports.
	again, err := chserver.Start(ctx, srv.Options())
	if err != nil {
		t.Fatalf("Start with the same options: %v", err)
	}
	t.Cleanup(func() { again.Stop() })
	srv = again
	if n := count(); n != 3 {
		t.Fatalf("after a second start the table has %d rows, want 3", n)
	}
}

func TestStartFailureQuotesErrorLog(t *testing.T) {
	argv := testharness.RequireClickHouse(t)
	// Hold the port the server is told to use.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := chserver.Start(ctx, chserver.Options{Argv: argv, Dir: t.TempDir(), TCPPort: port, StartTimeout: 20 * time.Second})
	if err == nil {
		srv.Stop()
		t.Fatalf("Start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("error does not quote the server's log about the taken port:\n%v", err)
	}
}

func TestStartWithoutDir(t *testing.T) {
	if _, err := chserver.Start(context.Background(), chserver.Options{}); err == nil {
		t.Fatal("Start without Dir succeeded")
	}
}

// TestPipelineUsers checks that the server has the users of the file compose
// mounts, with their demo passwords, and that the reader is read-only.
func TestPipelineUsers(t *testing.T) {
	srv := testharness.ClickHouse(t)
	for _, tc := range []struct {
		user, password string
		wantErr        bool
		readonly       string
	}{
		{user: deploy.ClickHouseWriterUser, password: deploy.DemoClickHouseWriterPassword, readonly: "0"},
		{user: deploy.ClickHouseReaderUser, password: deploy.DemoClickHouseReaderPassword, readonly: "1"},
		{user: deploy.ClickHouseReaderUser, password: deploy.DemoClickHouseWriterPassword, wantErr: true},
		{user: deploy.ClickHouseWriterUser, password: "", wantErr: true},
	} {
		t.Run(tc.user+"/"+tc.password, func(t *testing.T) {
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Addr()}, DialTimeout: 2 * time.Second,
				Auth: clickhouse.Auth{Username: tc.user, Password: tc.password}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var readonly string
			err = conn.QueryRow(context.Background(), "SELECT value FROM system.settings WHERE name = 'readonly'").Scan(&readonly)
			switch {
			case tc.wantErr && err == nil:
				t.Fatalf("logged in with a wrong password")
			case !tc.wantErr && err != nil:
				t.Fatalf("logging in: %v", err)
			case !tc.wantErr && readonly != tc.readonly:
				t.Errorf("readonly = %q, want %q", readonly, tc.readonly)
			}
		})
	}
}

func open(t *testing.T, addr string) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	return conn
}

// TestLongRunSettings checks that the server applies the settings of the
// file compose mounts into config.d: replaced parts go within a minute.
func TestLongRunSettings(t *testing.T) {
	srv := testharness.ClickHouse(t)
	conn := open(t, srv.Addr())
	defer conn.Close()
	for name, want := range map[string]string{"old_parts_lifetime": "30", "cleanup_delay_period": "10"} {
		var got string
		if err := conn.QueryRow(context.Background(), "SELECT value FROM system.merge_tree_settings WHERE name = ?", name).Scan(&got); err != nil {
			t.Fatalf("reading %s: %v", name, err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s (deploy/clickhouse/config.d/telemetry.xml)", name, got, want)
		}
	}
}
