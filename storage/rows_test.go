package storage

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

func TestColumnsAdd(t *testing.T) {
	ts := time.Date(2026, 11, 25, 12, 0, 0, 123e6, time.UTC).UnixMilli()
	valid := protocol.AppendEncode(nil, protocol.Reading{Device: "th-1", Boot: 7, Seq: 3, TS: ts,
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21.5}, {Name: "humidity_pct", Value: 40}}})
	hdr := nats.Header{protocol.HeaderReceived: []string{"1764100000999"}}
	tests := []struct {
		name    string
		subject string
		body    []byte
		header  nats.Header
		wantErr string
		rows    int
	}{
		{name: "valid", subject: "telemetry.us-east.th.th-1", body: valid, header: hdr, rows: 2},
		{name: "no received header", subject: "telemetry.us-east.th.th-1", body: valid, rows: 2},
		{name: "subject too short", subject: "telemetry.us-east.th-1", body: valid, wantErr: "not telemetry."},
		{name: "wrong root", subject: "deadletter.us-east.th.th-1", body: valid, wantErr: "not telemetry."},
		{name: "bad region", subject: "telemetry.US.th.th-1", body: valid, wantErr: "does not match"},
		{name: "device mismatch", subject: "telemetry.us-east.th.th-2", body: valid, wantErr: "not the subject's"},
		{name: "bad json", subject: "telemetry.us-east.th.th-1", body: []byte(`{"v":1,`), wantErr: "bad_json"},
		{name: "negative ts", subject: "telemetry.us-east.th.th-1",
			body:    protocol.AppendEncode(nil, protocol.Reading{Device: "th-1", Boot: 1, Seq: 1, TS: -5, Metrics: []protocol.Metric{{Name: "x", Value: 1}}}),
			wantErr: "ts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c columns
			err := c.add(tt.subject, tt.body, tt.header)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if c.rows() != 0 || c.readings != 0 {
					t.Fatalf("a rejected message added %d rows", c.rows())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.rows() != tt.rows || c.readings != 1 {
				t.Fatalf("rows %d readings %d, want %d and 1", c.rows(), c.readings, tt.rows)
			}
			for i := range c.rows() {
				if c.region[i] != "us-east" || c.deviceType[i] != "th" || c.device[i] != "th-1" || c.boot[i] != 7 || c.seq[i] != 3 {
					t.Errorf("row %d identity: %s %s %s %d %d", i, c.region[i], c.deviceType[i], c.device[i], c.boot[i], c.seq[i])
				}
				if c.tsMS[i] != uint64(ts) || !c.ts[i].Equal(time.UnixMilli(ts).Truncate(time.Second)) {
					t.Errorf("row %d time: %d %s", i, c.tsMS[i], c.ts[i])
				}
			}
			if c.metric[0] != "temperature_c" || c.value[0] != 21.5 || c.metric[1] != "humidity_pct" || c.value[1] != 40 {
				t.Errorf("metrics: %v %v", c.metric, c.value)
			}
			wantRecv := uint64(0)
			if tt.header != nil {
				wantRecv = 1764100000999
			}
			if c.receivedMS[0] != wantRecv {
				t.Errorf("received_ms = %d, want %d", c.receivedMS[0], wantRecv)
			}
			c.reset()
			if c.rows() != 0 || c.readings != 0 {
				t.Fatal("reset left rows")
			}
		})
	}
}

// FuzzColumnsAdd checks that no message, however malformed, panics or adds
// rows that do not line up.
func FuzzColumnsAdd(f *testing.F) {
	f.Add("telemetry.us-east.th.th-1", []byte(`{"v":1,"device":"th-1","boot":1,"seq":1,"ts":1764100000123,"metrics":{"t":1}}`))
	f.Add("telemetry.a.b.c", []byte(`{}`))
	f.Add("telemetry...", []byte(`null`))
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		var c columns
		err := c.add(subject, body, nil)
		n := c.rows()
		if err != nil && n != 0 {
			t.Fatalf("error %v but %d rows added", err, n)
		}
		for _, l := range []int{len(c.region), len(c.deviceType), len(c.device), len(c.boot), len(c.seq), len(c.value), len(c.ts), len(c.tsMS), len(c.receivedMS)} {
			if l != n {
				t.Fatalf("columns of different lengths: %d and %d", l, n)
			}
		}
	})
}

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"one", "CREATE TABLE t (a UInt8) ENGINE = Memory;\n", []string{"CREATE TABLE t (a UInt8) ENGINE = Memory"}},
		{"comments and two", "-- first; not a statement\nCREATE DATABASE d;\n\n-- second\nCREATE TABLE d.t\n(\n  a UInt8\n)\nENGINE = Memory;\n",
			[]string{"CREATE DATABASE d", "CREATE TABLE d.t\n(\n  a UInt8\n)\nENGINE = Memory"}},
		{"no final semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"only comments", "-- nothing\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitStatements(tt.sql)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEmbeddedMigrationsParse(t *testing.T) {
	for _, dir := range []string{serverMigrations, clusterMigrations} {
		ms, err := migrations(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 || ms[0].version != 1 {
			t.Fatalf("%s: %+v", dir, ms)
		}
		for _, m := range ms {
			for _, s := range m.statements {
				for _, banned := range []string{"DateTime64", "now64", "Map(", "TTL", "toStartOfInterval", "LowCardinality", "ADD COLUMN IF NOT EXISTS"} {
					if strings.Contains(s, banned) {
						t.Errorf("migration %s uses %s, which ClickHouse 18.16 lacks", m.name, banned)
					}
				}
				// A statement run on one member only would leave the
				// others without the table.
				if dir == clusterMigrations && !strings.Contains(s, " ON CLUSTER {cluster}") {
					t.Errorf("cluster migration %s: %q lacks ON CLUSTER {cluster}", m.name, s)
				}
			}
		}
	}
}

func TestColumnExists(t *testing.T) {
	const exists = "Cannot add column stored_ms: column with this name already exists"
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"18.16", &clickhouse.Exception{Code: 44, Message: exists}, true},
		{"current", &clickhouse.Exception{Code: 15, Message: "Cannot add column `stored_ms`: column with this name already exists"}, true},
		{"wrapped", fmt.Errorf("exec: %w", &clickhouse.Exception{Code: 44, Message: exists}), true},
		{"other ILLEGAL_COLUMN", &clickhouse.Exception{Code: 44, Message: "Cannot add column x: this column name is reserved"}, false},
		{"other code", &clickhouse.Exception{Code: 62, Message: exists}, false},
		{"not ClickHouse's", errors.New(exists), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := columnExists(tt.err); got != tt.want {
				t.Fatalf("columnExists(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{}},
		{name: "bad database", cfg: Config{Database: "tele-metry"}, wantErr: "database"},
		{name: "injection", cfg: Config{Database: "x; DROP TABLE y"}, wantErr: "database"},
		{name: "ack pending below batch", cfg: Config{BatchSize: 100, MaxAckPending: 50}, wantErr: "max ack pending"},
		{name: "negative batch", cfg: Config{BatchSize: -1}, wantErr: "batch size"},
		{name: "ack wait below flush", cfg: Config{AckWait: 2 * time.Second, FlushInterval: 3 * time.Second}, wantErr: "ack wait"},
		{name: "backoff reversed", cfg: Config{RetryBackoff: time.Second, MaxRetryBackoff: time.Millisecond}, wantErr: "backoff"},
		{name: "cluster members", cfg: Config{ClickHouseAddr: "a:9000, b:9000", Cluster: "telemetry"}},
		{name: "cluster injection", cfg: Config{Cluster: "c ON CLUSTER d"}, wantErr: "cluster"},
		{name: "empty member", cfg: Config{ClickHouseAddr: "a:9000,,b:9000"}, wantErr: "ClickHouse address"},
		{name: "trailing comma", cfg: Config{ClickHouseAddr: "a:9000,"}, wantErr: "ClickHouse address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
