package dashboard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestWebsocketOrigin dials /ws as browsers on different pages would: only
// the dashboard's own page and the configured origins get a websocket; a
// foreign page is refused with 403.
func TestWebsocketOrigin(t *testing.T) {
	url, _, _ := startRegion(t)
	d, base := startDashboard(t, Config{NATSURL: url, Domain: "us-east", Regions: []string{"us-east"},
		AllowedOrigins: []string{"https://Demo.example.org/"}})
	ws := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"http://" + d.Addr(), http.StatusSwitchingProtocols},
		{"https://demo.example.org", http.StatusSwitchingProtocols},
		{"", http.StatusSwitchingProtocols}, // not a browser
		{"http://evil.example.com", http.StatusForbidden},
		{"http://" + d.Addr() + ".evil.example.com", http.StatusForbidden},
		{"https://demo.example.org:8443", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			conn, resp, err := websocket.DefaultDialer.Dial(ws, h)
			if conn != nil {
				conn.Close()
			}
			if resp == nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("Origin %q: %s (%v), want %d", tc.origin, resp.Status, err, tc.want)
			}
		})
	}
}

func TestAllowedOriginsValidate(t *testing.T) {
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://demo.example.org", true},
		{"http://10.0.0.5:8080/", true},
		{"demo.example.org", false},
		{"https://demo.example.org/dashboard", false},
		{"ftp://demo.example.org", false},
		{"*", false},
	} {
		err := Config{AllowedOrigins: []string{tc.origin}}.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%q: Validate() = %v, want ok=%v", tc.origin, err, tc.ok)
		}
	}
}
