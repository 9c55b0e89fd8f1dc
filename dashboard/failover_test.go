package dashboard

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// regionJS is a JetStream context in region's domain, as the stream manager.
func regionJS(t *testing.T, e *stream.Embedded, region string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.NewWithDomain(testharness.Connect(t, e.URL(region)), region)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func regionTotals(s Snapshot) map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range s.Regions {
		out[r.Region] = r.Total
	}
	return out
}

// health is GET /healthz: the code and the body.
func health(t *testing.T, base string) (int, string, error) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func regionSnap(s Snapshot, name string) RegionSnapshot {
	for _, r := range s.Regions {
		if r.Region == name {
			return r
		}
	}
	return RegionSnapshot{}
}

// wantRejected checks the dead letters counted per region: fewer is not
// yet, more is a dead letter counted twice.
func wantRejected(t *testing.T, s Snapshot, want map[string]uint64) error {
	t.Helper()
	var short []string
	for r, n := range want {
		got := regionSnap(s, r).RejectedTotal
		if got > n {
			t.Fatalf("%s: %d dead letters counted, only %d published: one was counted twice", r, got, n)
		}
		if got < n {
			short = append(short, fmt.Sprintf("%s %d of %d", r, got, n))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("dead letters counted: %s", strings.Join(short, ", "))
	}
	return nil
}

// TestReadsFromFallbackWhenRegionServerStops stops the dashboard's region
// server: the dashboard reads READINGS from the next region, keeps counting
// the readings published in the others, says where it reads from, reads
// the reachable regions' DEADLETTER through the fallback's connection and
// is healthy. Once the server is started again it moves back home. Every
// dead letter is counted exactly once across both moves.
func TestReadsFromFallbackWhenRegionServerStops(t *testing.T) {
	e := testharness.Regions(t)
	cfg := Config{
		NATSURL:       e.URLAs("us-east", "dashboard"),
		Domain:        "us-east",
		PushInterval:  100 * time.Millisecond,
		FailoverAfter: time.Second,
	}
	for _, r := range []string{"eu-west", "ap-south"} {
		cfg.Fallbacks = append(cfg.Fallbacks, Fallback{Region: r, NATSURL: e.URLAs(r, "dashboard")})
	}
	_, base := startDashboard(t, cfg)
	waitConsuming(t, base)
	js := map[string]jetstream.JetStream{"us-east": regionJS(t, e, "us-east"), "eu-west": regionJS(t, e, "eu-west"), "ap-south": regionJS(t, e, "ap-south")}
	var seq uint64
	publishBoth := func() {
		seq++
		publishReading(t, js["eu-west"], "eu-west", "th-ew", seq, 20, 0)
		publishReading(t, js["ap-south"], "ap-south", "th-as", seq, 20, 0)
	}
	dead := map[string]uint64{}
	publishDead := func(region string, n int) {
		for range n {
			publish(t, js[region], deadLetter("deadletter."+region+".bad_json", "bad_json"))
			dead[region]++
		}
	}
	for _, r := range e.Regions() {
		publishDead(r, 3)
	}
	waitFor(t, 30*time.Second, func() error {
		publishBoth()
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if got := regionTotals(s); got["eu-west"] == 0 || got["ap-south"] == 0 || s.Domain != "us-east" {
			return fmt.Errorf("reading from %s, totals %v; want us-east counting eu-west and ap-south", s.Domain, got)
		}
		return wantRejected(t, s, dead)
	})

	before, err := getSnapshot(t, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StopRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var moved time.Duration
	waitFor(t, 60*time.Second, func() error {
		publishBoth()
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if s.Domain != "eu-west" {
			return fmt.Errorf("reading from %s, want eu-west", s.Domain)
		}
		if moved == 0 {
			moved = time.Since(down)
		}
		got, was := regionTotals(s), regionTotals(before)
		if got["eu-west"] < was["eu-west"]+5 || got["ap-south"] < was["ap-south"]+5 {
			return fmt.Errorf("totals %v, were %v before us-east stopped: want both counting on", got, was)
		}
		if s.HomeDomain != "us-east" {
			return fmt.Errorf("home domain %q, want us-east", s.HomeDomain)
		}
		return nil
	})
	t.Logf("reading from eu-west %s after us-east's server stopped (FailoverAfter %s)", moved.Round(time.Millisecond), cfg.FailoverAfter)

	// Failed over: the reachable regions' dead letters are read through
	// eu-west's server (eu-west's locally, ap-south's across the hub) and
	// counted; us-east's is unreachable; the dashboard is healthy.
	publishDead("eu-west", 4)
	publishDead("ap-south", 5)
	waitFor(t, 30*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		for _, r := range []string{"eu-west", "ap-south"} {
			if rs := regionSnap(s, r); !rs.Reachable {
				return fmt.Errorf("%s dead letters %q, want reachable through eu-west", r, rs.DeadLetters)
			}
		}
		if us := regionSnap(s, "us-east"); us.Reachable || us.RejectedTotal != dead["us-east"] {
			return fmt.Errorf("us-east reachable=%v (%q) with %d dead letters; want unreachable, %d counted before it stopped",
				us.Reachable, us.DeadLetters, us.RejectedTotal, dead["us-east"])
		}
		if !s.NATS.Connected || s.NATS.Readings != "ok" {
			return fmt.Errorf("nats connected=%v readings=%q, want eu-west's connection, ok", s.NATS.Connected, s.NATS.Readings)
		}
		return wantRejected(t, s, dead)
	})
	waitFor(t, 10*time.Second, func() error {
		code, body, err := health(t, base)
		if err != nil || code != http.StatusOK || !strings.Contains(body, "failed over to eu-west") {
			return fmt.Errorf("healthz %d %q %v, want 200 saying failed over to eu-west", code, body, err)
		}
		return nil
	})

	// us-east back: the dashboard moves home and counts on from where it
	// was in every region's DEADLETTER.
	if err := e.StartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	var back time.Duration
	waitFor(t, 60*time.Second, func() error {
		publishBoth()
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if s.Domain != "us-east" {
			return fmt.Errorf("reading from %s, want back on us-east", s.Domain)
		}
		if back == 0 {
			back = time.Since(up)
		}
		return nil
	})
	t.Logf("back on us-east %s after its server started again", back.Round(time.Millisecond))
	js["us-east"] = regionJS(t, e, "us-east") // the first connection may still be reconnecting
	publishDead("us-east", 2)
	publishDead("eu-west", 1)
	waitFor(t, 30*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		for _, r := range e.Regions() {
			if rs := regionSnap(s, r); !rs.Reachable {
				return fmt.Errorf("%s dead letters %q, want reachable", r, rs.DeadLetters)
			}
		}
		return wantRejected(t, s, dead)
	})
	code, body, err := health(t, base)
	if err != nil || code != http.StatusOK || strings.Contains(body, "failed over") {
		t.Errorf("healthz %d %q %v, want 200 at home", code, body, err)
	}
}

// TestStartsInCutOffRegion starts a dashboard in eu-west while eu-west is
// cut off from the hub: its READINGS consumer is created in the region
// alone and counts the region's readings.
func TestStartsInCutOffRegion(t *testing.T) {
	e := testharness.Regions(t)
	e.Link("eu-west").Cut()
	defer e.Link("eu-west").Heal()
	_, base := startDashboard(t, Config{NATSURL: e.URLAs("eu-west", "dashboard"), Domain: "eu-west", PushInterval: 100 * time.Millisecond})
	waitConsuming(t, base)
	js := regionJS(t, e, "eu-west")
	for i := range 20 {
		publishReading(t, js, "eu-west", "th-ew", uint64(i+1), 20, 0)
	}
	waitFor(t, 30*time.Second, func() error {
		s, err := getSnapshot(t, base)
		if err != nil {
			return err
		}
		if got := regionTotals(s)["eu-west"]; got != 20 || s.Domain != "eu-west" {
			return fmt.Errorf("reading from %s, %d eu-west readings; want eu-west, 20", s.Domain, got)
		}
		return nil
	})
	if !e.Link("eu-west").IsCut() {
		t.Fatal("eu-west's link healed by itself")
	}
}

func TestFallbackConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"fallbacks", Config{Fallbacks: []Fallback{{"eu-west", "nats://a:4223"}, {"ap-south", "nats://a:4224"}}}, ""},
		{"fallback is home", Config{Fallbacks: []Fallback{{"us-east", "nats://a:4223"}}}, "another region"},
		{"fallback twice", Config{Fallbacks: []Fallback{{"eu-west", "nats://a:4223"}, {"eu-west", "nats://a:4224"}}}, "listed twice"},
		{"fallback without URL", Config{Fallbacks: []Fallback{{"eu-west", ""}}}, "NATS URL"},
		{"negative failover", Config{FailoverAfter: -time.Second}, "failover after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
