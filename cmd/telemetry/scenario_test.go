package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/pipeline"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/stream"
)

const testToken = "stage-secret"

// startPresenterDemo runs the demo with the presenter API on, ClickHouse
// from PATH and short scenarios, and returns its dashboard URL once storage
// is up.
func startPresenterDemo(t *testing.T) string {
	t.Helper()
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 9, Rate: 60, Seed: 1,
		PresenterToken: testToken, ScenarioWindow: 3 * time.Second, ScenarioLead: time.Second,
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
		host               string // "" keeps the URL's
	}{
		// A page rebinding its name to the presenter's laptop, token or not
		// (DNS rebinding: the dashboard's Host check covers the presenter
		// API beside it).
		{"GET", "/api/scenario", "Bearer " + testToken, http.StatusForbidden, "rebind.example"},
		{"POST", "/api/scenario/hostile-burst", "", http.StatusForbidden, "rebind.example"},
		{"GET", "/api/scenario", "", http.StatusUnauthorized, ""},
		{"POST", "/api/scenario/hostile-burst", "", http.StatusUnauthorized, ""},
		{"GET", "/api/scenario", "Bearer wrong", http.StatusUnauthorized, ""},
		{"POST", "/api/scenario/cut-region?region=eu-west", "Bearer " + testToken + "x", http.StatusUnauthorized, ""},
		{"GET", "/api/scenario", "Bearer " + testToken, http.StatusOK, ""},
		{"POST", "/api/scenario/no-such-thing", "Bearer " + testToken, http.StatusNotFound, ""},
		{"POST", "/api/scenario/cut-region?region=mars", "Bearer " + testToken, http.StatusBadRequest, ""},
		// One server per region here: stopping it would stop the region.
		{"POST", "/api/scenario/stop-leader?region=us-east", "Bearer " + testToken, http.StatusConflict, ""},
	} {
		t.Run(fmt.Sprintf("%s %s %q %s", c.method, c.path, c.auth, c.host), func(t *testing.T) {
			req, _ := http.NewRequest(c.method, url+c.path, nil)
			if c.host != "" {
				req.Host = c.host
			}
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
			args = append(args, "--demo-url", url, "--presenter-token", testToken, "--json")
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

// TestStopLeaderOnAClusteredDemo: with every region a cluster of three
// servers (--nats-cluster 3), the presenter stops the server that leads
// the home region's READINGS, where storage reads, and starts it again:
// the ledger of the demo's whole fleet over the window shows nothing lost,
// and the event log names the server stopped.
func TestStopLeaderOnAClusteredDemo(t *testing.T) {
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 9, Rate: 60, Seed: 1, NATSCluster: 3,
		PresenterToken: testToken, ScenarioWindow: 3 * time.Second, ScenarioLead: time.Second,
	})
	url := consoleValue(t, out, dashboardLine)
	consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
	var stdout, errb bytes.Buffer
	code := run([]string{"scenario", "stop-leader", "us-east", "--demo-url", url, "--presenter-token", testToken, "--json"}, &stdout, &errb)
	var res scenario.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Ledger == nil {
		t.Fatalf("exit %d, no ledger (%v): %s\n%s", code, err, stdout.String(), errb.String())
	}
	if l := *res.Ledger; code != 0 || !res.OK || l.Lost != 0 || l.Acked == 0 || l.Stored < l.Acked {
		t.Fatalf("exit %d, ok %v, error %q, ledger %+v: want every acknowledged reading stored", code, res.OK, res.Error, l)
	}
	s, err := scenario.Client{URL: url, Token: testToken}.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range s.Events {
		steps = append(steps, e.Text)
	}
	log := strings.Join(steps, "\n")
	if !regexp.MustCompile(`us-east-[123], the leader of us-east's readings, stopped`).MatchString(log) || !strings.Contains(log, "started again") {
		t.Errorf("event log:\n%s\nwant the leader named as stopped and started again", log)
	}
}

// TestCtrlCMidScenario: Ctrl-C while a scenario's fault is on (a region cut
// off, ClickHouse killed) stops the demo within 3 s, with the link healed
// on the way out and no ClickHouse left running.
func TestCtrlCMidScenario(t *testing.T) {
	testharness.RequireClickHouse(t)
	for _, c := range []struct{ name, query, fault string }{
		{"cut-region", "?region=eu-west", "eu-west cut off"},
		{"clickhouse-outage", "", "ClickHouse killed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out, stop := launchDemo(t, pipeline.DemoConfig{MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
				DataDir: dir, Devices: 9, Rate: 60, Seed: 1,
				PresenterToken: testToken, ScenarioWindow: time.Minute, ScenarioLead: time.Second})
			url := consoleValue(t, out, dashboardLine)
			consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
			req, _ := http.NewRequest(http.MethodPost, url+"/api/scenario/"+c.name+c.query, nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("starting %s: %v %v", c.name, resp, err)
			}
			resp.Body.Close()
			// The fault is on.
			consoleValue(t, out, regexp.MustCompile(`scenario `+c.name+` \(run 1\) step: (`+c.fault+`.*)`))
			if c.name == "cut-region" {
				linksReadDown(t, out, url, "eu-west")
			}

			took := stop()
			t.Logf("stopped %v after Ctrl-C mid %s", took.Round(10*time.Millisecond), c.name)
			if took > 3*time.Second {
				t.Errorf("the demo took %v to stop after Ctrl-C mid %s, want at most 3 s:\n%s", took.Round(10*time.Millisecond), c.name, out)
			}
			if pids := clickhouseUnder(t, dir); len(pids) > 0 {
				t.Errorf("ClickHouse still running after the demo stopped: pids %v", pids)
			}
		})
	}
}

// linksReadDown checks, right after the demo's console said region was cut
// off, that the page and `telemetry stream status` read every link to and
// from region down within 2 s.
func linksReadDown(t *testing.T, out *testharness.SyncBuffer, url, region string) {
	t.Helper()
	cut := time.Now()
	var last []dashboard.ReplicationLag
	err := poll.Until(2*time.Second, 50*time.Millisecond, func() error {
		s, err := snapshot(url)
		if err != nil {
			return err
		}
		last = s.Replication
		n := 0
		for _, l := range s.Replication {
			if l.From == region || l.To == region {
				if l.State != stream.LinkDown {
					return fmt.Errorf("the page reads %s>%s %q", l.From, l.To, l.State)
				}
				n++
			}
		}
		if n != 2*(len(stream.DefaultRegions)-1) {
			return fmt.Errorf("the page shows %d links of %s", n, region)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("2 s after the cut: %v; replication %+v", err, last)
	}
	t.Logf("the page read every link of %s down %.2f s after the console said it was cut", region, time.Since(cut).Seconds())

	var urls []string
	for _, r := range stream.DefaultRegions {
		addr := consoleValue(t, out, regexp.MustCompile(`NATS region `+r+`\s+nats://\S+@(\S+)`))
		urls = append(urls, r+"=nats://"+stream.DemoUser+":"+stream.DemoPassword+"@"+addr)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"stream", "status", "--nats", strings.Join(urls, ","), "--json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("stream status: exit %d: %s", code, stderr.String())
	}
	var st []stream.RegionStatus
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		t.Fatalf("stream status --json: %v\n%s", err, stdout.String())
	}
	for _, r := range st {
		for _, src := range r.Sources {
			if (r.Region == region || src.From == region) && src.State != stream.LinkDown {
				t.Errorf("stream status reads %s>%s %q during the cut", src.From, r.Region, src.State)
			}
		}
	}
}

// clickhouseUnder lists the processes whose command line names a config
// file under dir: the demo's ClickHouse.
func clickhouseUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte("clickhouse")) && bytes.Contains(cmdline, []byte(dir)) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// TestStorageAwayPastTheBudgetShows: the whole demo, its READINGS budget
// at the minimum (1 MiB, a few seconds of this fleet), ClickHouse killed
// by the outage scenario. Once us-east's stream drops readings storage
// has not stored, the page's us-east card and /healthz say so, with the
// reason, within 5 s.
func TestStorageAwayPastTheBudgetShows(t *testing.T) {
	testharness.RequireClickHouse(t)
	out, _ := launchDemo(t, pipeline.DemoConfig{MQTT: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 9, Rate: 300, Seed: 1, StreamBudget: 1 << 20,
		PresenterToken: testToken, ScenarioWindow: time.Minute, ScenarioLead: time.Second})
	url := consoleValue(t, out, dashboardLine)
	consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
	req, _ := http.NewRequest(http.MethodPost, url+"/api/scenario/clickhouse-outage", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting the outage: %v %v", resp, err)
	}
	resp.Body.Close()
	consoleValue(t, out, regexp.MustCompile(`scenario clickhouse-outage \(run 1\) step: (ClickHouse killed.*)`))

	// The stream's own account, read as `telemetry stream status` does.
	addr := consoleValue(t, out, regexp.MustCompile(`NATS region us-east\s+nats://\S+@(\S+)`))
	nc, err := nats.Connect("nats://" + stream.DemoUser + ":" + stream.DemoPassword + "@" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	testharness.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		st := stream.Status(context.Background(), stream.Regions{"us-east": js}, []string{"us-east"})[0]
		if st.Storage == nil || st.Storage.Dropped == 0 {
			return fmt.Errorf("us-east READINGS %d of %d bytes, storage %+v", st.Bytes, st.MaxBytes, st.Storage)
		}
		return nil
	})
	dropping := time.Now()
	testharness.CheckFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "us-east: READINGS full in us-east") {
			return fmt.Errorf("healthz %d %q", resp.StatusCode, body)
		}
		s, err := snapshot(url)
		if err != nil {
			return err
		}
		for _, r := range s.Regions {
			if r.Region == "us-east" && !strings.Contains(r.Alert, "readings dropped before storage stored them") {
				return fmt.Errorf("us-east's card says %q", r.Alert)
			}
		}
		return nil
	})
	t.Logf("the page and /healthz said so %v after the stream began dropping", time.Since(dropping).Round(10*time.Millisecond))
}
