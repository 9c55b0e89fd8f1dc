package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/stream"
)

// isLoopback reports whether a server bound to addr (host:port) can be
// reached from this machine only. An empty host or 0.0.0.0 is every
// interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// notice is a line a command says on start; warn marks a warning.
type notice struct {
	text string
	warn bool
}

// exposure is what a command says on start about who can reach it. what
// is its page, bound to addr. On loopback: one line on how to show it to
// other machines (hint: what to set first). exposed are the public demo
// defaults still in use by servers that other machines can reach: a
// warning names them.
func exposure(what, addr, hint string, exposed []string) []notice {
	var out []notice
	if isLoopback(addr) {
		_, port, _ := net.SplitHostPort(addr)
		out = append(out, notice{text: fmt.Sprintf("%s is reachable from this machine only (%s). To show it to other machines use --listen 0.0.0.0:%s, "+
			"and first %s (README, Security).", what, addr, port, hint)})
	}
	if len(exposed) > 0 {
		out = append(out, notice{warn: true, text: fmt.Sprintf("public DEMO DEFAULT passwords in use where other machines can reach them: %s. "+
			"Change them before going on a shared network (README, Security).", strings.Join(exposed, "; "))})
	}
	return out
}

// demoSecretsOfDemo lists the public demo defaults that `telemetry demo`
// runs with and that other machines can reach: the embedded MQTT broker
// when --mqtt is beyond loopback, and ClickHouse's users when --clickhouse
// points beyond loopback. The embedded NATS servers and a ClickHouse the
// demo starts listen on loopback only.
func demoSecretsOfDemo(f demoFlags) []string {
	var out []string
	if !isLoopback(f.mqtt) {
		if f.fleetSecret == deploy.DemoFleetSecret || f.mqttIngestPass == deploy.DemoMQTTIngestPassword {
			out = append(out, "the MQTT broker on "+f.mqtt+" (--fleet-secret, --mqtt-ingest-password)")
		}
	}
	if f.clickhouse != "" && f.clickhouse != "none" && !isLoopback(f.clickhouse) {
		u := f.chUsers
		if u.ClickHousePassword == deploy.DemoClickHouseWriterPassword || u.HistoryPassword == deploy.DemoClickHouseReaderPassword {
			out = append(out, "the ClickHouse users on "+f.clickhouse+" (--clickhouse-password, --history-password, and deploy/clickhouse/users.d/telemetry.xml)")
		}
	}
	return out
}

// demoNATSPasswords lists the NATS URLs among urls that carry the demo
// password of their user (deploy/nats/accounts.conf).
func demoNATSPasswords(urls ...string) []string {
	var out []string
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			continue
		}
		if p, ok := u.User.Password(); ok && p == stream.DemoPasswordFor(u.User.Username()) {
			out = append(out, fmt.Sprintf("NATS user %s on %s", u.User.Username(), u.Host))
		}
	}
	return out
}
