package bench_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/pipeline"
)

// agentTokenEnv, when set, makes this test binary a bench agent with that
// token (TestMain): the agents of TestAgentsMergeIntoOneReport are
// processes of their own.
const agentTokenEnv = "TELEMETRY_TEST_AGENT_TOKEN"

func TestMain(m *testing.M) {
	if token := os.Getenv(agentTokenEnv); token != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log := slog.New(slog.DiscardHandler)
		a, err := bench.NewAgent(devices.Config{}, token, log)
		if err == nil {
			err = bench.ServeAgent(ctx, "127.0.0.1:0", a, os.Stderr, log)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startAgent runs an agent process and returns its URL.
func startAgent(t *testing.T, token string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), agentTokenEnv+"="+token)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`on (http://\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case u := <-found:
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not say where it listens within 30 s")
		return ""
	}
}

// TestAgentsMergeIntoOneReport runs a fleet over three agent processes
// against an in-process pipeline: the report's counts are the sums of the
// agents' shares, the shares cover the fleet in disjoint ranges, and its
// PUBACK percentiles are those of the union of the agents' histograms.
func TestAgentsMergeIntoOneReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline, ClickHouse and three agents")
	}
	testharness.RequireClickHouse(t)
	const token = "agents-test-token-0123456789"
	var urls []string
	for range 3 {
		urls = append(urls, startAgent(t, token))
	}
	cfg := bench.Config{
		Fleet:  devices.Config{IDPrefix: bench.DefaultIDPrefix, Devices: 31, Rate: 310, Duration: 4 * time.Second, Seed: 5, Chaos: 0.05, Reboots: 0.01, ClockSkew: 5 * time.Second},
		Agents: urls, AgentToken: token, DrainTimeout: 60 * time.Second,
	}
	var progress testharness.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, hops, err := pipeline.Bench(ctx, cfg, t.TempDir(), &progress, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, progress.String())
	}
	var out strings.Builder
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Lost != 0 || rep.Sent == 0 || rep.Stored != rep.Sent || rep.Hostile.Sent == 0 || rep.Hostile.AsExpected != rep.Hostile.Sent {
		t.Errorf("want every reading stored and every hostile message dead-lettered as expected:\n%s", out.String())
	}

	// While they ran, the coordinator showed them as one fleet.
	if !regexp.MustCompile(`agents 3/3 running  devices 31/31 connected  sent [1-9]`).MatchString(progress.String()) {
		t.Errorf("no progress line of the three agents' 31 devices sending:\n%s", progress.String())
	}
	if len(rep.Agents) != len(urls) {
		t.Fatalf("%d agents in the report, want %d", len(rep.Agents), len(urls))
	}
	var sum ledger.Counts
	next := 0
	for i, a := range rep.Agents {
		if a.FirstDevice != next || a.Devices < 10 || a.Devices > 11 {
			t.Errorf("agent %d ran devices %d to %d, want 10 or 11 from %d", i+1, a.FirstDevice, a.FirstDevice+a.Devices-1, next)
		}
		next += a.Devices
		if a.Sent == 0 || a.Stored != a.Sent || a.Lost != 0 {
			t.Errorf("agent %d: %+v, want its readings sent and stored", i+1, a.Counts)
		}
		sum.Add(a.Counts)
	}
	if next != cfg.Fleet.Devices || rep.Devices != cfg.Fleet.Devices {
		t.Errorf("agents ran %d devices, the report says %d, want %d", next, rep.Devices, cfg.Fleet.Devices)
	}
	if sum != rep.Counts {
		t.Errorf("the agents' shares add up to %+v, the report says %+v", sum, rep.Counts)
	}

	var log bytes.Buffer
	if err := hops.WriteLog(&log); err != nil {
		t.Fatal(err)
	}
	hs, err := bench.MergeLogs(&log)
	if err != nil {
		t.Fatal(err)
	}
	union := hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	for i := range urls {
		part := hs[bench.HopAgentAck(i)]
		if part == nil || part.TotalCount() == 0 {
			t.Fatalf("no PUBACK histogram of agent %d in the log", i+1)
		}
		union.Merge(part)
	}
	merged := hs[bench.HopAck]
	for _, q := range []float64{50, 99, 99.9, 100} {
		if got, want := merged.ValueAtQuantile(q), union.ValueAtQuantile(q); got != want {
			t.Errorf("PUBACK p%v: %d µs merged, %d µs from the union of the agents' histograms", q, got, want)
		}
	}
	p := rep.Latency[bench.HopAck]
	if p.Corrected != uint64(union.TotalCount()) || p.P99 != float64(union.ValueAtQuantile(99))/1000 || p.Max != float64(union.Max())/1000 {
		t.Errorf("the report's PUBACK %+v, the union's count %d, p99 %d µs, max %d µs", p, union.TotalCount(), union.ValueAtQuantile(99), union.Max())
	}
	t.Logf("report:\n%s", out.String())
}

// TestAgentRefusesWhatItShouldNot: an agent runs nothing without its
// token, nor a request it cannot trust to be a run; a short token is
// refused at start.
func TestAgentRefusesWhatItShouldNot(t *testing.T) {
	const token = "agent-refusal-token-0123456789"
	if _, err := bench.NewAgent(devices.Config{}, "short", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("an agent started with a 5-byte token")
	}
	a, err := bench.NewAgent(devices.Config{Broker: "tcp://127.0.0.1:1"}, token, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	valid := `{"devices":1,"rate":1,"duration":1000000000,"start_at":"` + time.Now().Format(time.RFC3339Nano) + `"}`
	for _, c := range []struct {
		name, method, path, auth, body string
		want                           int
	}{
		{"no token", "POST", "/run", "", valid, http.StatusUnauthorized},
		{"wrong token", "POST", "/run", "Bearer " + strings.Repeat("x", len(token)), valid, http.StatusUnauthorized},
		{"token as a query", "POST", "/run?token=" + token, "", valid, http.StatusUnauthorized},
		{"GET", "GET", "/run", "Bearer " + token, "", http.StatusMethodNotAllowed},
		{"progress without the token", "GET", "/progress", "", "", http.StatusUnauthorized},
		{"progress while nothing runs", "GET", "/progress", "Bearer " + token, "", http.StatusNoContent},
		{"elsewhere", "POST", "/debug/pprof/", "Bearer " + token, valid, http.StatusNotFound},
		{"unknown field", "POST", "/run", "Bearer " + token, `{"devices":1,"command":"rm -rf /"}`, http.StatusBadRequest},
		{"too large", "POST", "/run", "Bearer " + token, `{"id_prefix":"` + strings.Repeat("a", 70<<10) + `"}`, http.StatusBadRequest},
		{"an hour ahead", "POST", "/run", "Bearer " + token, `{"devices":1,"rate":1,"duration":1000000000,"start_at":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `"}`, http.StatusBadRequest},
		{"bad fleet", "POST", "/run", "Bearer " + token, `{"devices":-5,"rate":1,"duration":1000000000}`, http.StatusBadRequest},
	} {
		req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
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
			t.Errorf("%s: %s, want %d", c.name, resp.Status, c.want)
		}
	}

	// Its own job: with the token, a run (starting in 3 s) against a broker
	// that is not there ends in a result that says so; a second run asked
	// meanwhile is refused.
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+"/run", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	later := `{"devices":1,"rate":1,"duration":1000000000,"start_at":"` + time.Now().Add(3*time.Second).Format(time.RFC3339Nano) + `"}`
	answers := make(chan string, 2)
	for range 2 {
		go func() {
			code, body := post(later)
			answers <- fmt.Sprint(code, " ", body)
		}()
	}
	got := []string{<-answers, <-answers}
	slices.Sort(got) // "200 ..." before "409 ..."
	if !strings.HasPrefix(got[0], "200 ") || !strings.Contains(got[0], `"error":"running the fleet`) || !strings.HasPrefix(got[1], "409 ") {
		t.Errorf("two runs asked at once: %q, want one run (200, the fleet's error) and one refused (409)", got)
	}
}
