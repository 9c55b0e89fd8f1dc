package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/scenario"
)

const testToken = "stage-secret"

// startPresenterDemo runs the demo with the presenter API on, ClickHouse
// from PATH and short scenarios, and returns its dashboard URL once storage
// is up.
func startPresenterDemo(t *testing.T) string {
	t.Helper()
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, demoFlags{
		mqtt: "127.0.0.1:0", listen: "127.0.0.1:0", storageListen: "127.0.0.1:0",
		dataDir: t.TempDir(), devices: 9, rate: 60, seed: 1,
		presenterToken: testToken, scenarioWindow: 3 * time.Second, scenarioLead: time.Second,
	})
	url := consoleValue(t, out, dashboardLine)
	consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
	return url
}

func TestPresenterAPINeedsTheToken(t *testing.T) {
	url := startPresenterDemo(t)
	for _, c := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/api/scenario", "", http.StatusUnauthorized},
		{"POST", "/api/scenario/hostile-burst", "", http.StatusUnauthorized},
		{"GET", "/api/scenario", "Bearer wrong", http.StatusUnauthorized},
		{"POST", "/api/scenario/cut-region?region=eu-west", "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"GET", "/api/scenario", "Bearer " + testToken, http.StatusOK},
		{"POST", "/api/scenario/no-such-thing", "Bearer " + testToken, http.StatusNotFound},
		{"POST", "/api/scenario/cut-region?region=mars", "Bearer " + testToken, http.StatusBadRequest},
	} {
		t.Run(fmt.Sprintf("%s %s %q", c.method, c.path, c.auth), func(t *testing.T) {
			req, _ := http.NewRequest(c.method, url+c.path, nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
	// The dashboard is still served beside the API.
	if _, err := snapshot(url); err != nil {
		t.Errorf("dashboard snapshot beside the presenter API: %v", err)
	}
}

func TestEveryScenarioEndsWithNothingLost(t *testing.T) {
	url := startPresenterDemo(t)
	cases := []struct {
		args  []string
		check func(l scenario.Ledger) error
	}{
		{[]string{"hostile-burst", "60"}, func(l scenario.Ledger) error {
			if l.HostileSent == 0 || l.Quarantined == 0 {
				return fmt.Errorf("%d hostile messages sent, %d quarantined", l.HostileSent, l.Quarantined)
			}
			return nil
		}},
		{[]string{"reboot-storm", "9"}, func(l scenario.Ledger) error {
			if l.Reboots == 0 || l.Boots <= l.Devices {
				return fmt.Errorf("%d reboots, %d boots of %d devices", l.Reboots, l.Boots, l.Devices)
			}
			return nil
		}},
		{[]string{"cut-region", "eu-west"}, nil},
		{[]string{"kill-ingest", "ap-south"}, nil},
		{[]string{"clickhouse-outage"}, nil},
	}
	for _, c := range cases {
		t.Run(c.args[0], func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"scenario"}, c.args...)
			args = append(args, "--demo-url", url, "--token", testToken, "--json")
			code := run(args, &out, &errb)
			t.Logf("telemetry %s:\n%s", strings.Join(c.args, " "), errb.String())
			var res scenario.Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("exit %d, no result (%v):\n%s", code, err, out.String())
			}
			if res.Ledger == nil {
				t.Fatalf("exit %d, no ledger: %s", code, res.Error)
			}
			l := *res.Ledger
			if l.Lost != 0 || code != 0 || !res.OK {
				t.Fatalf("exit %d, ok %v, error %q, ledger %+v", code, res.OK, res.Error, l)
			}
			if l.Acked == 0 || l.Stored < l.Acked {
				t.Errorf("acknowledged %d, stored %d: want every acknowledged reading stored", l.Acked, l.Stored)
			}
			if c.check != nil {
				if err := c.check(l); err != nil {
					t.Error(err)
				}
			}
		})
	}

	// Every run marked its start and end in the event log.
	s, err := scenario.Client{URL: url, Token: testToken}.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	marks := map[string]string{}
	for _, e := range s.Events {
		marks[e.Scenario] += e.Kind + " "
	}
	for _, c := range cases {
		if m := marks[c.args[0]]; !strings.HasPrefix(m, "start ") || !strings.HasSuffix(m, "end ") {
			t.Errorf("%s: events %q, want a start first and an end last", c.args[0], m)
		}
	}
	if len(s.Results) != len(cases) {
		t.Errorf("%d results kept, want %d", len(s.Results), len(cases))
	}

	// The dashboard marks every run on its charts, offers the presenter
	// panel and shows the last run's ledger.
	snap, err := snapshot(url)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Presenter {
		t.Error("the snapshot does not offer the presenter panel")
	}
	if len(snap.Scenarios) != len(cases) {
		t.Errorf("%d markers on the dashboard, want %d: %+v", len(snap.Scenarios), len(cases), snap.Scenarios)
	}
	for i, m := range snap.Scenarios {
		if i < len(cases) && (m.Scenario != cases[i].args[0] || m.Start.IsZero() || !m.End.After(m.Start)) {
			t.Errorf("marker %d: %+v, want %s with a start and an end", i, m, cases[i].args[0])
		}
	}
	last := cases[len(cases)-1].args[0]
	if l := snap.Ledger; l == nil || l.Scenario != last || l.Lost != 0 || !l.OK || l.Stored == 0 {
		t.Errorf("ledger on the dashboard %+v, want %s's with lost 0", l, last)
	}
}
