package dashboard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// hostAllowList is the Host check of every route of the dashboard, its
// defence against DNS rebinding: a page on a name its owner controls
// (rebind.example) re-points that name at 127.0.0.1, or at the
// presenter's laptop on the venue network, and then reads the dashboard
// as its own same-origin site. The browser still sends the attacker's name
// in Host, so a request is served only when its Host, port ignored, is
//
//   - an IP address literal, v4 or v6: an address cannot be rebound, and the
//     audience reaches a dashboard listening on 0.0.0.0 by the laptop's IP;
//   - localhost or a name under .localhost, which browsers resolve to the
//     loopback themselves (RFC 6761 section 6.3);
//   - the host of one of Config.AllowedOrigins, or one of
//     Config.AllowedHosts: names the presenter put the dashboard behind.
//
// Anything else is answered 403, counted as foreign_host in
// telemetry_dashboard_refused_total and logged rate limited.
type hostAllowList map[string]bool

func newHostAllowList(cfg Config) hostAllowList {
	l := hostAllowList{}
	for _, h := range cfg.AllowedHosts {
		l[normalHost(h)] = true
	}
	for _, o := range cfg.AllowedOrigins {
		if u, err := url.Parse(normalOrigin(o)); err == nil {
			l[normalHost(u.Hostname())] = true
		}
	}
	return l
}

// allows reports whether a request whose Host header is hostport may be
// served.
func (l hostAllowList) allows(hostport string) bool {
	h := normalHost(hostOfHeader(hostport))
	if h == "" {
		// HTTP/1.0 without Host: not a browser, which always sends one,
		// so not a rebinding page either. Refused all the same: nothing
		// legitimate needs it, and one rule is easier to reason about.
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return h == "localhost" || strings.HasSuffix(h, ".localhost") || l[h]
}

// hostOfHeader is the host of a Host header, without port or IPv6
// brackets: "[::1]:8080" is "::1", "example.org" is itself.
func hostOfHeader(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// normalHost is a host name as compared: lower case, without the trailing
// dot of a fully qualified name (a browser sends "localhost." as typed).
func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// CheckHost wraps next with the dashboard's Host check (see hostAllowList):
// Handler is wrapped already; a program that serves other routes beside it
// on the same listener, as the demo does with the presenter API, wraps its
// own mux with it too.
func (d *Dashboard) CheckHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.hosts.allows(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		d.refused.Add(refusedForeignHost, r.Host+" (from "+connlimit.HostOf(r.RemoteAddr)+", allow it with --allowed-hosts)")
		w.Header().Set("Cache-Control", "no-store")
		h := hostOfHeader(r.Host)
		http.Error(w, fmt.Sprintf("host %q is not allowed: the dashboard answers only to IP addresses, localhost and the names it is given (a guard against DNS rebinding).\n"+
			"To open it as %s, start it with --allowed-hosts=%s", r.Host, h, h), http.StatusForbidden)
	})
}

// validHost checks an entry of Config.AllowedHosts: a bare host name or IP
// address, as it appears in Host without the port.
func validHost(h string) error {
	const want = "want a bare host name or IP address, without scheme, port or wildcard, e.g. dash.venue.example"
	n := normalHost(h)
	switch {
	case strings.Contains(h, "://"):
		return fmt.Errorf("allowed host %q: %s (no scheme: that is --allowed-origins' form)", h, want)
	case strings.Contains(n, "*"):
		return fmt.Errorf("allowed host %q: %s (no wildcard: list each name)", h, want)
	}
	if _, err := netip.ParseAddr(n); err == nil && !strings.Contains(n, "%") {
		return nil
	}
	if strings.Contains(n, ":") {
		return fmt.Errorf("allowed host %q: %s (no port: any port of the name is served)", h, want)
	}
	if !validHostName(n) {
		return fmt.Errorf("allowed host %q: %s", h, want)
	}
	return nil
}

// validHostName reports whether h is a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (compose's container names have them), 1
// to 63 bytes each, not starting or ending with '-', 253 bytes at most.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
