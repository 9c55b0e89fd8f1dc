package storage

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAPIAnswersOtherMachinesOnlyWithTheToken: storage's /api/* is the
// fleet's data. A request from this machine gets it (the demo, and the
// writer's own tests over loopback); one from another machine gets 403
// when storage has no --api-token and 401 without the right bearer token
// when it has one; /healthz and /metrics answer everyone.
func TestAPIAnswersOtherMachinesOnlyWithTheToken(t *testing.T) {
	e := newLoadEnv(t, 300)
	paths := []string{"/api/status", "/api/ledger", "/api/history?metric=temperature_c"}

	// Its own job, over a real loopback connection.
	srv := httptest.NewServer(e.w.Handler())
	t.Cleanup(srv.Close)
	for _, p := range paths {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			t.Errorf("%s from this machine: %s, want served", p, resp.Status)
		}
	}

	// From another machine (the request's source address).
	ask := func(h http.Handler, path, auth string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "192.0.2.10:40000"
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	open := e.w.Handler()
	for _, p := range paths {
		if code := ask(open, p, "Bearer anything"); code != http.StatusForbidden {
			t.Errorf("%s from another machine, no --api-token: %d, want 403", p, code)
		}
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if code := ask(open, p, ""); code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("%s from another machine: %d, want served", p, code)
		}
	}
	e.w.cfg.APIToken = "a-reader-token"
	guarded := e.w.Handler()
	for _, p := range paths {
		for _, auth := range []string{"", "Bearer wrong", "a-reader-token", "Basic a-reader-token"} {
			if code := ask(guarded, p, auth); code != http.StatusUnauthorized {
				t.Errorf("%s from another machine with %q: %d, want 401", p, auth, code)
			}
		}
		if code := ask(guarded, p, "Bearer a-reader-token"); code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("%s from another machine with the token: %d, want served", p, code)
		}
	}
}
