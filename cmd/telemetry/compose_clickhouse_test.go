package main

import (
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
)

// TestComposeClickHouseUsers checks that compose's storage logs in as the
// users of the file compose mounts into ClickHouse, with the passwords whose
// hashes are in it, unless .env says otherwise.
func TestComposeClickHouseUsers(t *testing.T) {
	p, _ := loadCompose(t)
	s, ok := p.Services["storage"]
	if !ok {
		t.Fatal("no storage service in compose.yaml")
	}
	env := func(name string) string {
		if v := s.Environment[name]; v != nil {
			return *v
		}
		return ""
	}
	for _, tc := range []struct {
		userFlag, user, passwordEnv, password string
	}{
		{"clickhouse-user", deploy.ClickHouseWriterUser, "TELEMETRY_CLICKHOUSE_PASSWORD", deploy.DemoClickHouseWriterPassword},
		{"history-user", deploy.ClickHouseReaderUser, "TELEMETRY_HISTORY_PASSWORD", deploy.DemoClickHouseReaderPassword},
	} {
		if v, _ := flagValue(s.Command, tc.userFlag); v != tc.user {
			t.Errorf("storage --%s=%q, want %q (deploy/clickhouse/users.d/telemetry.xml)", tc.userFlag, v, tc.user)
		}
		if !strings.Contains(string(deploy.ClickHouseUsers), "<"+tc.user+">") {
			t.Errorf("user %s is not in deploy/clickhouse/users.d/telemetry.xml", tc.user)
		}
		if got := env(tc.passwordEnv); got != tc.password {
			t.Errorf("storage %s defaults to %q, want the demo password %q whose hash the users file has", tc.passwordEnv, got, tc.password)
		}
	}
	mounted := false
	for _, v := range p.Services["clickhouse"].Volumes {
		mounted = mounted || strings.HasSuffix(v.Source, "deploy/clickhouse/users.d/telemetry.xml") && v.Target == "/etc/clickhouse-server/users.d/telemetry.xml"
	}
	if !mounted {
		t.Error("compose's clickhouse does not mount deploy/clickhouse/users.d/telemetry.xml into /etc/clickhouse-server/users.d/")
	}
}
