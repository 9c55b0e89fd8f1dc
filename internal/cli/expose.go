package cli

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/telemetry-demo/telemetry/stream"
)

// IsLoopback reports whether a server bound to addr (host:port) can be
// reached from this machine only. An empty host or 0.0.0.0 is every
// interface.
func IsLoopback(addr string) bool {
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

// Notice is a line a command says on start; Warn marks a warning.
type Notice struct {
	Text string
	Warn bool
}

// Exposure is what a command says on start about who can reach it. what
// is its page, bound to addr. On loopback: one line on how to show it to
// other machines (hint: what to set first). exposed are the public demo
// defaults still in use by servers that other machines can reach: a
// warning names them.
func Exposure(what, addr, hint string, exposed []string) []Notice {
	var out []Notice
	if IsLoopback(addr) {
		_, port, _ := net.SplitHostPort(addr)
		out = append(out, Notice{Text: fmt.Sprintf("%s is reachable from this machine only (%s). To show it to other machines use --listen 0.0.0.0:%s, "+
			"and first %s (README, Security).", what, addr, port, hint)})
	}
	if len(exposed) > 0 {
		out = append(out, Notice{Warn: true, Text: fmt.Sprintf("public DEMO DEFAULT passwords in use where other machines can reach them: %s. "+
			"Change them before going on a shared network (README, Security).", strings.Join(exposed, "; "))})
	}
	return out
}

// DemoNATSPasswords lists the NATS URLs among urls that carry the demo
// password of their user (deploy/nats/accounts.conf).
func DemoNATSPasswords(urls ...string) []string {
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

// LogNotices logs each notice, a warning where it says so.
func LogNotices(log *slog.Logger, notices []Notice) {
	for _, n := range notices {
		if n.Warn {
			log.Warn(n.Text)
		} else {
			log.Info(n.Text)
		}
	}
}
