package dashboard

import (
	"fmt"
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

// TestReadsFromFallbackWhenRegionServerStops shuts the dashboard's region
// server down: the dashboard reads READINGS from the next region, keeps
// counting the readings published in the others, and says where it reads
// from.
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
	js := map[string]jetstream.JetStream{"eu-west": regionJS(t, e, "eu-west"), "ap-south": regionJS(t, e, "ap-south")}
	var seq uint64
	publishBoth := func() {
		seq++
		publishReading(t, js["eu-west"], "eu-west", "th-ew", seq, 20, 0)
		publishReading(t, js["ap-south"], "ap-south", "th-as", seq, 20, 0)
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
		return nil
	})

	before, err := getSnapshot(t, base)
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	e.Server("us-east").Shutdown()
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
