package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"
)

// newUpgrader returns the websocket upgrader of /ws. Its origin check is
// what keeps another site, open in a browser on the presenter's laptop or
// on the conference network, from reading the dashboard's stream through
// the visitor's browser (a cross-site websocket): a refused upgrade is
// answered 403. It trusts Host because CheckHost (host.go) checked it
// first: a page whose own name is rebound to the dashboard's address sends
// an Origin that matches its Host, and only the Host check refuses it.
func newUpgrader(cfg Config, d *Dashboard) websocket.Upgrader {
	allowed := map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		allowed[normalOrigin(o)] = true
	}
	return websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 16 << 10,
		CheckOrigin: func(r *http.Request) bool {
			if originAllowed(r, allowed) {
				return true
			}
			// One line per interval however many: a page can retry in a loop.
			d.refused.Add(refusedForeignOrigin, r.Header.Get("Origin")+" (to "+r.Host+", allow it with --allowed-origins)")
			return false
		},
	}
}

// originAllowed accepts a request without Origin (not from a browser: a
// browser always sends one with a websocket), one whose Origin names the
// host the request was sent to (the page's own, however the presenter
// reached it: localhost, an IP, a host name), and one of allowed, the
// normalized Config.AllowedOrigins.
func originAllowed(r *http.Request, allowed map[string]bool) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return allowed[normalOrigin(origin)]
}

// normalOrigin is an origin as browsers send it: scheme://host[:port],
// lower case, without a trailing slash.
func normalOrigin(o string) string {
	return strings.ToLower(strings.TrimRight(strings.TrimSpace(o), "/"))
}

// validOrigin checks an entry of Config.AllowedOrigins.
func validOrigin(o string) error {
	u, err := url.Parse(normalOrigin(o))
	switch {
	case err != nil:
		return fmt.Errorf("allowed origin %q: %w", o, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil:
		return fmt.Errorf("allowed origin %q: want scheme://host[:port] as a browser sends it, e.g. https://demo.example.org", o)
	}
	return nil
}
