package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// getAs sends GET base+path over TCP to the dashboard's listener with the
// Host header host, as a browser sends it for a URL naming host, and
// returns the status and the body.
func getAs(t *testing.T, base, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s as %s: %v", path, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s as %s: reading: %v", path, host, err)
	}
	return resp.StatusCode, string(b)
}

// dialWSAs opens /ws with the Host and Origin headers a page on origin,
// reached as host, sends, and returns the status of the answer.
func dialWSAs(t *testing.T, base, host, origin string) int {
	t.Helper()
	h := http.Header{"Host": {host}, "Origin": {origin}}
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", h)
	if conn != nil {
		conn.Close()
	}
	if resp == nil {
		t.Fatalf("/ws as %s from %s: no answer: %v", host, origin, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// wantRefusedHost checks the refusal a rebinding page gets: 403, a body
// that says how to allow the name.
func wantRefusedHost(t *testing.T, code int, body, host, path string) {
	t.Helper()
	if code != http.StatusForbidden {
		t.Errorf("GET %s as %s: %d, want 403", path, host, code)
	}
	if !strings.Contains(body, "not allowed") || !strings.Contains(body, "--allowed-hosts") {
		t.Errorf("GET %s as %s: body %q does not say the host is not allowed and how to allow it (--allowed-hosts)", path, host, body)
	}
}

// TestDNSRebindingWebsocket is the attack: a page on rebind.example, whose
// name now resolves to the dashboard's address, opens /ws as a same-origin
// websocket (Origin and Host agree, so the Origin check alone lets it in).
// The same from the dashboard's own page, reached by its IP or localhost,
// still gets its websocket.
func TestDNSRebindingWebsocket(t *testing.T) {
	d, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t)})
	port := d.Addr()[strings.LastIndex(d.Addr(), ":")+1:]

	if code := dialWSAs(t, base, "rebind.example:8080", "http://rebind.example:8080"); code != http.StatusForbidden {
		t.Errorf("/ws from a rebound page: %d, want 403", code)
	}
	if n := d.refused.Count(refusedForeignHost); n != 1 {
		t.Errorf("refused %s: %d, want 1", refusedForeignHost, n)
	}
	if n := d.refused.Count(refusedForeignOrigin); n != 0 {
		t.Errorf("refused %s: %d, want 0 (the Host check answers first)", refusedForeignOrigin, n)
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		if code := dialWSAs(t, base, host, "http://"+host); code != http.StatusSwitchingProtocols {
			t.Errorf("/ws from the dashboard's page at %s: %d, want 101", host, code)
		}
	}
	code, metrics := getAs(t, base, "127.0.0.1:"+port, "/metrics")
	if want := `telemetry_dashboard_refused_total{reason="foreign_host"} 1`; code != http.StatusOK || !strings.Contains(metrics, want) {
		t.Errorf("/metrics: %d, lacks %s", code, want)
	}
}

// TestDNSRebindingHTTP asks every route as a rebound name and as the
// names a viewer really uses: IP literals (the audience types the laptop's
// address), localhost and names under .localhost.
func TestDNSRebindingHTTP(t *testing.T) {
	d, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t)})
	port := d.Addr()[strings.LastIndex(d.Addr(), ":")+1:]

	refused := []string{"rebind.example", "rebind.example:" + port, "127.0.0.1.rebind.example", "localhost.rebind.example:" + port, "notlocalhost", "rebind.example."}
	paths := []string{"/", "/app.js", "/api/snapshot", "/api/recent", "/api/history", "/metrics", "/healthz", "/ws"}
	for _, host := range refused {
		for _, path := range paths {
			code, body := getAs(t, base, host, path)
			wantRefusedHost(t, code, body, host, path)
		}
	}
	if n, want := d.refused.Count(refusedForeignHost), uint64(len(refused)*len(paths)); n != want {
		t.Errorf("refused %s: %d, want %d", refusedForeignHost, n, want)
	}

	for _, host := range []string{"localhost:" + port, "LocalHost.", "127.0.0.1:" + port, "127.0.0.1", "[::1]:" + port, "[::1]", "192.168.1.5:8080", "[fe80::1]:8080", "dashboard.localhost:" + port} {
		for _, path := range []string{"/", "/app.js", "/api/snapshot", "/metrics"} {
			if code, body := getAs(t, base, host, path); code != http.StatusOK {
				t.Errorf("GET %s as %s: %d %q, want 200", path, host, code, body)
			}
		}
	}
}

// TestDNSRebindingAllowedNames serves the names a presenter gave, and only
// those: AllowedHosts, and the hosts of AllowedOrigins (a reverse proxy's
// page opens /ws through the proxy, Host its own name).
func TestDNSRebindingAllowedNames(t *testing.T) {
	d, base := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t),
		AllowedHosts: []string{"dash.venue.example"}, AllowedOrigins: []string{"https://stage.example"}})

	for _, host := range []string{"dash.venue.example", "dash.venue.example:8080", "DASH.Venue.example", "stage.example", "stage.example:443"} {
		if code, body := getAs(t, base, host, "/api/snapshot"); code != http.StatusOK {
			t.Errorf("GET /api/snapshot as %s: %d %q, want 200", host, code, body)
		}
	}
	if code := dialWSAs(t, base, "stage.example", "https://stage.example"); code != http.StatusSwitchingProtocols {
		t.Errorf("/ws through the proxy stage.example: %d, want 101", code)
	}
	for _, host := range []string{"other.venue.example", "venue.example", "x.dash.venue.example", "stage.example.rebind.example"} {
		code, body := getAs(t, base, host, "/api/snapshot")
		wantRefusedHost(t, code, body, host, "/api/snapshot")
	}
	if n := d.refused.Count(refusedForeignHost); n != 4 {
		t.Errorf("refused %s: %d, want 4", refusedForeignHost, n)
	}
}

// TestHandlerChecksHost mounts Handler on a listener of another server, as
// the demo does: the check travels with it.
func TestHandlerChecksHost(t *testing.T) {
	d, _ := startDashboard(t, Config{NATSURL: "nats://" + closedAddr(t)})
	mux := http.NewServeMux()
	mux.Handle("/", d.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	code, body := getAs(t, srv.URL, "rebind.example", "/api/snapshot")
	wantRefusedHost(t, code, body, "rebind.example", "/api/snapshot")
	if code, body := getAs(t, srv.URL, "localhost", "/api/snapshot"); code != http.StatusOK {
		t.Errorf("GET /api/snapshot as localhost: %d %q, want 200", code, body)
	}
}

func TestAllowedHostsValidate(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"dash.venue.example", true},
		{"Dash.Venue.Example.", true},
		{"laptop", true},
		{"telemetry_dashboard_1", true},
		{"10.0.0.5", true},
		{"fe80::1", true},
		{"http://x", false},
		{"x:80", false},
		{"[::1]:80", false},
		{"*.example", false},
		{"*", false},
		{"x/path", false},
		{"-x.example", false},
		{"a..b", false},
		{"", false},
	} {
		err := Config{AllowedHosts: []string{tc.host}}.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%q: Validate() = %v, want ok=%v", tc.host, err, tc.ok)
		}
	}
}
