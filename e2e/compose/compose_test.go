package compose

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// project is the compose project of the test, apart from a presenter's
// own `telemetry` stack's volumes (its published ports are compose.yaml's).
const project = "telemetry-test"

// token is the presenter token the stack gets, as a presenter gives it:
// TELEMETRY_PRESENTER_TOKEN in compose's environment.
const token = "compose-test-presenter-token"

// stack runs docker compose on the repository's compose.yaml and the
// override files in files (compose.scale.yaml, once the test scales out).
type stack struct {
	t     *testing.T
	root  string
	files []string
}

// compose runs docker compose with args and returns its output.
func (s *stack) compose(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	base := []string{"compose", "-p", project}
	for _, f := range append([]string{"compose.yaml"}, s.files...) {
		base = append(base, "-f", filepath.Join(s.root, f))
	}
	cmd := exec.CommandContext(ctx, "docker", append(base, args...)...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "TELEMETRY_PRESENTER_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker compose %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *stack) must(timeout time.Duration, args ...string) string {
	s.t.Helper()
	out, err := s.compose(timeout, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// container is the id of service's container.
func (s *stack) container(service string) string {
	s.t.Helper()
	id := strings.TrimSpace(s.must(time.Minute, "ps", "-q", service))
	if id == "" {
		s.t.Fatalf("no container of %s", service)
	}
	return id
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// state is a container's "running networks": whether it runs, and on how
// many networks.
func state(t *testing.T, id string) string {
	t.Helper()
	return docker(t, "inspect", "-f", "{{.State.Running}} {{len .NetworkSettings.Networks}}", id)
}

// TestComposeStackForReal: compose.yaml comes up healthy from images built
// here; a load test from the host stores every reading once; the
// dashboard on 127.0.0.1:8080 shows every region; then each fault is done
// to the containers under a load test, and each ledger says lost 0.
func TestComposeStackForReal(t *testing.T) {
	testharness.RequireDocker(t)
	root := testharness.RepoRoot(t)
	images := exec.Command(filepath.Join(root, "scripts", "compose-images.sh"))
	images.Dir = root
	if out, err := images.CombinedOutput(); err != nil {
		t.Fatalf("scripts/compose-images.sh: %v\n%s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "telemetry")
	build := exec.Command("go", "build", "-o", bin, "./cmd/telemetry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building telemetry: %v\n%s", err, out)
	}

	s := &stack{t: t, root: root}
	// A stack left by an interrupted run would hold the ports.
	s.must(3*time.Minute, "down", "-v", "--timeout", "5")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.compose(time.Minute, "logs", "--no-color", "--tail", "30")
			t.Logf("the stack's last log lines:\n%s", out)
		}
		if out, err := s.compose(3*time.Minute, "down", "-v", "--timeout", "5"); err != nil {
			t.Errorf("docker compose down: %v\n%s", err, out)
		}
	})
	// From `up` to readings of every region on the page, as a presenter
	// meets it on stage (docs/PRESENTER.md quotes it).
	upStart := time.Now()
	s.must(6*time.Minute, "up", "-d", "--wait", "--wait-timeout", "300")
	healthy := time.Since(upStart)
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		return everyRegionLive("http://127.0.0.1:8080/api/snapshot")
	})
	t.Logf("docker compose up: every service healthy after %.1f s, readings of every region on the page after %.1f s",
		healthy.Seconds(), time.Since(upStart).Seconds())

	t.Run("a load test from the host stores every reading once", func(t *testing.T) {
		rep := runBench(t, bin, nil, "--rate", "2000", "--duration", "60s")
		if rep.Sent < 2000*60*99/100 {
			t.Errorf("sent %d readings, want about %d", rep.Sent, 2000*60)
		}
	})

	t.Run("the page in a browser: every region live, a scenario one click away", func(t *testing.T) {
		ctx := testharness.Browser(t, 1920, 1080)
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := chromedp.Do(nctx, chromedp.Navigate("http://127.0.0.1:8080/#token="+token))
		cancel()
		if err != nil {
			t.Fatalf("opening the dashboard: %v", err)
		}
		waitText(t, ctx, "conn-state", "live", func(s string) bool { return s == "live" })
		for _, r := range []string{"us-east", "eu-west", "ap-south"} {
			waitText(t, ctx, "rate-"+r, "a rate above zero", func(s string) bool {
				v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
				return err == nil && v > 0
			})
			waitText(t, ctx, "reach-"+r, "reachable", func(s string) bool {
				return strings.Contains(s, "reachable") && !strings.Contains(s, "UNREACHABLE")
			})
		}
		// The presenter panel, unlocked by the token in the address: one
		// click cuts storage off from ClickHouse through the relay.
		start := time.Now()
		waitText(t, ctx, "scenario-clickhouse-outage", "its button", func(s string) bool { return strings.Contains(s, "clickhouse-outage") })
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = chromedp.Do(cctx, chromedp.Click(chromedp.ID("scenario-clickhouse-outage")))
		cancel()
		if err != nil {
			t.Fatalf("clicking clickhouse-outage: %v", err)
		}
		waitText(t, ctx, "ledger-title", "clickhouse-outage: nothing lost", func(s string) bool {
			return strings.Contains(s, "clickhouse-outage") && strings.Contains(s, "nothing lost")
		})
		waitText(t, ctx, "ledger-lost", "0", func(s string) bool { return s == "0" })
		logs := s.must(time.Minute, "logs", "--no-color", "--since", start.Format(time.RFC3339), "relay")
		if !regexp.MustCompile(`msg="link cut".* link=clickhouse\b`).MatchString(logs) {
			t.Errorf("the click cut no link of the relay:\n%s", logs)
		}
	})

	t.Run("a phone joins through Mosquitto's WebSocket listener", phoneJoins)

	const window = 10 * time.Second
	ingest, clickhouse, nats := s.container("ingest-eu-west"), s.container("clickhouse"), s.container("nats-eu-west")
	faults := []struct {
		name       string
		apply, end func(t *testing.T)
		// faulty and after are the container's state (see state) while
		// the fault lasts and once it is over: ingest is on the network
		// the services share only, ClickHouse and NATS on the one with
		// this machine's ports too (compose.yaml).
		id, faulty, after string
	}{
		{"ingest's container killed",
			// The engine restarts no container it was told to kill: it
			// stays down for the window, as in the demo's kill-ingest.
			func(t *testing.T) { s.must(time.Minute, "kill", "-s", "SIGKILL", "ingest-eu-west") },
			func(t *testing.T) { s.must(2*time.Minute, "up", "-d", "--wait", "ingest-eu-west") },
			ingest, "false 1", "true 1"},
		{"ClickHouse's container killed",
			func(t *testing.T) { s.must(time.Minute, "kill", "-s", "SIGKILL", "clickhouse") },
			func(t *testing.T) { s.must(2*time.Minute, "up", "-d", "--wait", "clickhouse") },
			clickhouse, "false 2", "true 2"},
		{"a region's NATS cut from its network",
			// Off the network the services share; this machine still
			// reaches it on its published port.
			func(t *testing.T) { docker(t, "network", "disconnect", project+"_internal", nats) },
			func(t *testing.T) {
				docker(t, "network", "connect", "--alias", "nats-eu-west", project+"_internal", nats)
			},
			nats, "true 1", "true 2"},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			runBench(t, bin, func() {
				f.apply(t)
				if got := state(t, f.id); got != f.faulty {
					t.Errorf("during the fault the container is %q (running, networks), want %q", got, f.faulty)
				}
				// The outage's length is the scenario: the fleet keeps
				// publishing through it.
				<-time.After(window)
				if got := state(t, f.id); got != f.faulty {
					t.Errorf("at the window's end the container is %q (running, networks), want %q", got, f.faulty)
				}
				f.end(t)
				if got := state(t, f.id); got != f.after {
					t.Errorf("after the fault the container is %q (running, networks), want %q", got, f.after)
				}
			}, "--rate", "1000", "--duration", "30s")
		})
	}
	// The presenter's way: each scenario from `telemetry scenario` (the
	// panel's API), done by the relay, its ledger from witness devices.
	for _, sc := range []struct {
		args []string
		link string // the relay's link it cuts
	}{
		{[]string{"cut-region", "eu-west"}, "leaf-eu-west"},
		{[]string{"kill-ingest", "ap-south"}, "ingest-ap-south"},
		{[]string{"clickhouse-outage"}, "clickhouse"},
		{[]string{"hostile-burst", "200"}, ""},
		{[]string{"reboot-storm", "20"}, ""},
	} {
		t.Run("scenario "+strings.Join(sc.args, " "), func(t *testing.T) {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, append(append([]string{"scenario"}, sc.args...),
				"--presenter-token", token, "--duration", "8s")...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK: nothing lost") {
				t.Fatalf("telemetry scenario %v: %v\n%s", sc.args, err, out)
			}
			if sc.link == "" {
				return
			}
			logs := s.must(time.Minute, "logs", "--no-color", "--since", start.Format(time.RFC3339), "relay")
			for _, what := range []string{"link cut", "link healed"} {
				if !regexp.MustCompile(`msg="` + what + `".* link=` + sc.link + `\b`).MatchString(logs) {
					t.Errorf("the relay's log since the scenario began has no %q of %s:\n%s", what, sc.link, logs)
				}
			}
		})
	}
	t.Run("a hostile burst", func(t *testing.T) {
		rep := runBench(t, bin, nil, "--rate", "1000", "--duration", "15s", "--chaos", "0.2")
		if rep.Hostile.Sent == 0 || rep.Hostile.DeadLettered != rep.Hostile.Acked {
			t.Errorf("hostile messages: sent %d, acknowledged %d, dead-lettered %d, want every acknowledged one dead-lettered",
				rep.Hostile.Sent, rep.Hostile.Acked, rep.Hostile.DeadLettered)
		}
	})
	t.Run("a reboot storm", func(t *testing.T) {
		rep := runBench(t, bin, nil, "--rate", "1000", "--duration", "15s", "--reboots", "0.02")
		if rep.Behaviours.Reboots == 0 {
			t.Error("no device rebooted")
		}
	})
	// compose.scale.yaml on the running stack: a second ingest in every
	// region and a second writer join, and under load one of each is
	// killed. The writer stays dead (the other takes over its messages
	// after the ack wait); the ingest comes back to its broker session,
	// where its share of the readings waited.
	t.Run("scaled out, one ingest and one writer killed", func(t *testing.T) {
		s.files = append(s.files, "compose.scale.yaml")
		s.must(3*time.Minute, "up", "-d", "--wait", "--wait-timeout", "120")
		second := map[string]string{}
		for _, svc := range []string{"ingest-us-east-2", "ingest-eu-west-2", "ingest-ap-south-2", "storage-2"} {
			second[svc] = s.container(svc)
			if got := state(t, second[svc]); got != "true 1" {
				t.Fatalf("%s is %q (running, networks), want running on the internal network", svc, got)
			}
		}
		runBench(t, bin, func() {
			s.must(time.Minute, "kill", "-s", "SIGKILL", "ingest-eu-west-2", "storage-2")
			for _, svc := range []string{"ingest-eu-west-2", "storage-2"} {
				if got := state(t, second[svc]); got != "false 1" {
					t.Errorf("killed, %s is %q, want stopped", svc, got)
				}
			}
			<-time.After(window)
			s.must(2*time.Minute, "up", "-d", "--wait", "ingest-eu-west-2")
		}, "--rate", "1000", "--duration", "30s")
	})
}

// connected matches the bench's progress line once the whole fleet is
// connected: "devices 1000/1000 connected ...".
var connected = regexp.MustCompile(`^devices (\d+)/(\d+) connected`)

// runBench runs `telemetry bench` from the host against the stack with
// extra args; during, if given, runs once the whole fleet is connected. It
// fails the test unless the report says ok, nothing lost, and every
// acknowledged reading stored.
func runBench(t *testing.T, bin string, during func(), args ...string) bench.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"bench", "--json",
		// The stack's ClickHouse, published on loopback for this; its
		// processes are not this machine's to sample.
		"--clickhouse", "127.0.0.1:9000", "--process-metrics", "none"}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	fleetUp := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		up := false
		for sc.Scan() {
			line := sc.Text()
			progress.WriteString(line + "\n")
			if m := connected.FindStringSubmatch(line); !up && m != nil && m[1] == m[2] {
				up = true
				close(fleetUp)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	if during != nil {
		select {
		case <-fleetUp:
			during()
		case <-scanned:
			// The bench ended before its fleet was up: its error follows.
		}
	}
	<-scanned
	werr := cmd.Wait()
	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("bench %v: %v; no report (%v)\n%s", args, werr, err, tail(progress.String(), 20))
	}
	t.Logf("bench %v: sent %d, acknowledged %d, stored %d, lost %d, drained in %.1f s",
		args, rep.Sent, rep.Acked, rep.Stored, rep.Lost, rep.DrainSecs)
	if !rep.OK || werr != nil || rep.Lost != 0 || rep.Stored != rep.Acked || rep.Acked == 0 {
		t.Errorf("bench %v: ok %v (exit %v), sent %d, acknowledged %d, stored %d, lost %d, problems %v, missing %v\n%s",
			args, rep.OK, werr, rep.Sent, rep.Acked, rep.Stored, rep.Lost, rep.Problems, rep.Missing, tail(progress.String(), 20))
	}
	return rep
}

// everyRegionLive checks the dashboard's snapshot: every region of the
// stack with readings in the last window, reachable, its ingest heard.
func everyRegionLive(url string) error {
	var snap struct {
		Regions []struct {
			Region    string  `json:"region"`
			Rate      float64 `json:"rate"`
			Reachable bool    `json:"reachable"`
			Ingest    struct {
				Heard time.Time `json:"heard"`
			} `json:"ingest"`
		} `json:"regions"`
	}
	if err := testharness.GetJSON(url, &snap); err != nil {
		return fmt.Errorf("the snapshot: %w", err)
	}
	want := map[string]bool{"us-east": true, "eu-west": true, "ap-south": true}
	for _, r := range snap.Regions {
		switch {
		case r.Rate <= 0:
			return fmt.Errorf("%s: no readings in the last window", r.Region)
		case !r.Reachable:
			return fmt.Errorf("%s: not reachable", r.Region)
		case time.Since(r.Ingest.Heard) > 10*time.Second:
			return fmt.Errorf("%s: ingest last heard %v", r.Region, r.Ingest.Heard)
		}
		delete(want, r.Region)
	}
	if len(want) > 0 {
		return fmt.Errorf("regions missing from the page: %v", want)
	}
	return nil
}

// waitText waits up to two minutes until the element with id has a text
// ok accepts.
func waitText(t *testing.T, ctx context.Context, id, what string, ok func(string) bool) {
	t.Helper()
	testharness.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ectx, chromedp.Evaluate[string](fmt.Sprintf(`(document.getElementById(%q) || {}).textContent || ""`, id)))
		if err != nil {
			return err
		}
		if !ok(s) {
			return fmt.Errorf("#%s is %q, want %s", id, s, what)
		}
		return nil
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
