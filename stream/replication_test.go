package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// publisher publishes unique readings into its region at a steady pace,
// retrying each until JetStream acknowledges it, as ingest does.
type publisher struct {
	region string
	js     jetstream.JetStream
	acked  atomic.Uint64
}

func (p *publisher) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		msg := &nats.Msg{Subject: "telemetry." + p.region + ".probe." + p.region + "-dev", Data: []byte("{}"), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-dev:1:%d", p.region, seq))
		for {
			pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := p.js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		p.acked.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startPublishers runs one publisher per region until stop is called, which
// returns once they have all stopped.
func startPublishers(t *testing.T, e *Embedded) (map[string]*publisher, func()) {
	t.Helper()
	pubs := map[string]*publisher{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range e.Regions() {
		nc, err := nats.Connect(e.URL(r), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		p := &publisher{region: r, js: js}
		pubs[r] = p
		wg.Add(1)
		go func() { defer wg.Done(); p.run(ctx, 10*time.Millisecond) }()
	}
	return pubs, func() { cancel(); wg.Wait() }
}

func connectAll(t testing.TB, e *Embedded) Regions {
	t.Helper()
	urls := map[string]string{}
	for _, r := range e.Regions() {
		urls[r] = e.URL(r)
	}
	rs, conns, err := Connect(urls, e.Regions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	return rs
}

func source(st []RegionStatus, to, from string) (SourceStatus, bool) {
	for _, r := range st {
		if r.Region != to {
			continue
		}
		for _, s := range r.Sources {
			if s.From == from {
				return s, true
			}
		}
	}
	return SourceStatus{}, false
}

// waitConverged waits until every region holds exactly want readings and
// reports no lag.
func waitConverged(t *testing.T, rs Regions, regions []string, want uint64) {
	t.Helper()
	checkFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		for _, st := range Status(context.Background(), rs, regions) {
			if !st.Reachable {
				return fmt.Errorf("%s unreachable: %s", st.Region, st.Error)
			}
			if st.Readings != want {
				return fmt.Errorf("%s holds %d readings, want %d", st.Region, st.Readings, want)
			}
			for _, src := range st.Sources {
				if src.LagMessages != 0 || src.LagSeconds != 0 {
					return fmt.Errorf("%s still lags on %s: %d msgs, %.1f s", st.Region, src.From, src.LagMessages, src.LagSeconds)
				}
			}
		}
		return nil
	})
}

// TestRegionCutOffKeepsWorkingAndConverges cuts eu-west off from the hub for
// 30 s under load: eu-west keeps accepting its readings, the others' lag on
// it grows, and after the heal every region holds every reading once.
func TestRegionCutOffKeepsWorkingAndConverges(t *testing.T) {
	const cutFor = 30 * time.Second
	e := startTestRegions(t)
	rs := connectAll(t, e)
	pubs, stop := startPublishers(t, e)
	defer stop()

	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, p := range pubs {
			if p.acked.Load() < 50 {
				return fmt.Errorf("%s: %d published", p.region, p.acked.Load())
			}
		}
		return nil
	})
	e.Link("eu-west").Cut()
	cutAt := time.Now()
	euAtCut := pubs["eu-west"].acked.Load()

	// Cut off, eu-west still accepts readings, and the others see their lag
	// on eu-west grow, in messages and in seconds.
	var sawLag bool
	sample := time.NewTicker(500 * time.Millisecond) // the cut lasts cutFor; sample it
	defer sample.Stop()
	for ; time.Since(cutAt) < cutFor; <-sample.C {
		st := Status(context.Background(), rs, e.Regions())
		us, _ := source(st, "us-east", "eu-west")
		ap, _ := source(st, "ap-south", "eu-west")
		if time.Since(cutAt) > 10*time.Second && us.LagMessages > 0 && us.LagSeconds > 5 && ap.LagMessages > 0 && ap.LagSeconds > 5 {
			sawLag = true
		}
	}
	// A consumer (a storage writer or dashboard restarting there) can still
	// be created in the cut-off region.
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := rs["eu-west"].CreateOrUpdateConsumer(cctx, ReadingsStream, jetstream.ConsumerConfig{Durable: "while-cut-off"}); err != nil {
		t.Errorf("creating a consumer in eu-west while cut off: %v", err)
	}
	cancel()
	if got := pubs["eu-west"].acked.Load(); got < euAtCut+100 {
		t.Errorf("eu-west accepted only %d readings while cut off", got-euAtCut)
	}
	if !sawLag {
		t.Errorf("the other regions' lag on eu-west never showed (want > 0 messages and > 5 s after 10 s cut off)")
	}
	e.Link("eu-west").Heal()
	// Keep publishing across the heal: until every region took 100 more.
	healedAt := map[string]uint64{}
	for r, p := range pubs {
		healedAt[r] = p.acked.Load()
	}
	checkFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		for r, p := range pubs {
			if n := p.acked.Load() - healedAt[r]; n < 100 {
				return fmt.Errorf("%s: %d readings published since the heal", r, n)
			}
		}
		return nil
	})
	stop()

	var total uint64
	for _, p := range pubs {
		total += p.acked.Load()
	}
	waitConverged(t, rs, e.Regions(), total)
}

// TestRegionServerRestartLosesNothing restarts us-east's server (file
// storage) while every region publishes.
func TestRegionServerRestartLosesNothing(t *testing.T) {
	e := startTestRegions(t)
	rs := connectAll(t, e)
	pubs, stop := startPublishers(t, e)
	defer stop()
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if n := pubs["us-east"].acked.Load(); n < 100 {
			return fmt.Errorf("us-east: %d published", n)
		}
		return nil
	})
	before := pubs["us-east"].acked.Load()
	if err := e.RestartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := pubs["us-east"].acked.Load(); n < before+100 {
			return fmt.Errorf("us-east published %d since the restart", n-before)
		}
		return nil
	})
	stop()
	var total uint64
	for _, p := range pubs {
		total += p.acked.Load()
	}
	waitConverged(t, rs, e.Regions(), total)
}

// burst publishes n readings into region as fast as JetStream acknowledges
// them (four publishers, 256 in flight each, as ingest publishes), tagged
// so that each burst's readings are new.
func burst(t testing.TB, e *Embedded, region string, n int, tag string) {
	t.Helper()
	payload := []byte(`{"v":1,"device":"b-1","boot":1,"seq":1,"ts":1764100000123,"metrics":{"temperature_c":21.5,"humidity_pct":40.2,"battery_pct":97.1}}`)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := nats.Connect(e.URL(region))
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, err := jetstream.NewWithDomain(nc, region, jetstream.WithPublishAsyncMaxPending(256))
			if err != nil {
				errs <- err
				return
			}
			for i := w; i < n; i += 4 {
				device := fmt.Sprintf("%s-b-%d", region, i%100)
				msg := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.burst.%s", region, device), Data: payload, Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%s:%d", device, tag, i))
				for {
					_, err := js.PublishMsgAsync(msg)
					if err == nil {
						break
					}
					if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
						errs <- err
						return
					}
					select {
					case <-js.PublishAsyncComplete():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				errs <- fmt.Errorf("%s: publishes not acknowledged after 30 s", region)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// readingsOf is how many readings region's READINGS holds.
func readingsOf(t *testing.T, rs Regions, region string) uint64 {
	t.Helper()
	s, err := rs[region].Stream(context.Background(), ReadingsStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// TestSourcesResumeRightAfterRegionsReturn reproduces the stall a load
// tester met after restarting the demo: us-east comes up while eu-west and
// ap-south are still down, so its sources' requests to them go nowhere.
// nats-server waits 30 s before asking again (without the Mender,
// replication from eu-west stalled 40 s after the regions were back, under
// a burst); the Mender restarts the sources once the regions answer, so the
// burst reaches us-east, whole and once, within seconds of their return.
func TestSourcesResumeRightAfterRegionsReturn(t *testing.T) {
	e := startTestRegions(t)
	rs := connectAll(t, e)
	mender := NewMender(DefaultTopology(DefaultRegions), rs, func(ctx context.Context) []RegionStatus {
		return Status(ctx, rs, e.Regions())
	}, slog.New(slog.DiscardHandler))
	ctx, stopMender := context.WithCancel(context.Background())
	defer stopMender()
	go mender.Run(ctx)

	// See us-east's requests to the other regions through the hub, to know
	// they went out while those regions were down.
	nc, err := nats.Connect(e.hub.ClientURL(), nats.UserInfo(DemoUser, DemoPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	asked := make(chan string, 64)
	sub, err := nc.Subscribe("$JS.*.API.CONSUMER.>", func(m *nats.Msg) {
		select {
		case asked <- strings.Split(m.Subject, ".")[1]:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"eu-west", "ap-south"} {
		if err := e.StopRegion(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.RestartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for !seen["eu-west"] || !seen["ap-south"] {
		select {
		case r := <-asked:
			seen[r] = true
		case <-deadline:
			t.Fatalf("us-east did not ask the stopped regions for their consumers within 30 s (asked %v)", seen)
		}
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"eu-west", "ap-south"} {
		if err := e.StartRegion(r); err != nil {
			t.Fatal(err)
		}
	}
	back := time.Now()
	before := readingsOf(t, rs, "us-east")
	const n = 20_000
	burst(t, e, "eu-west", n, "after-restart")
	published := time.Since(back)
	// With the Mender the sources ask again as soon as the regions answer,
	// so us-east holds the burst within 15 s of their return, or 8 s after
	// the burst's last publish when a loaded machine (CI, the race
	// detector) takes longer than that to publish it. Without it the
	// sources waited out 30 s after the return.
	if err := poll.Until(max(15*time.Second, published+8*time.Second)-time.Since(back), 100*time.Millisecond, func() error {
		if got := readingsOf(t, rs, "us-east"); got < before+n {
			return fmt.Errorf("us-east holds %d of eu-west's %d new readings %.1f s after the regions returned", got-before, n, time.Since(back).Seconds())
		}
		return nil
	}); err != nil {
		var b strings.Builder
		WriteStatus(&b, Status(context.Background(), rs, e.Regions()))
		t.Fatalf("%v\n%s", err, b.String())
	}
	t.Logf("us-east held the burst %.1f s after the regions returned (published in %.1f s); %d sources restarted", time.Since(back).Seconds(), published.Seconds(), mender.Restarts())
	// Whole and once: every region holds exactly every reading.
	waitConverged(t, rs, e.Regions(), before+n)
	if mender.Restarts() < 2 {
		t.Errorf("the mender restarted %d sources, want us-east's two at least", mender.Restarts())
	}
}

// TestLinkStatesTellTheTruth: with nothing published every source reads
// idle, not down; a region cut off reads down on both sides of the cut,
// and its sources come back after the heal.
func TestLinkStatesTellTheTruth(t *testing.T) {
	e := startTestRegions(t)
	rs := connectAll(t, e)
	ctx := context.Background()
	states := func(want func(to, from string) string) func() error {
		return func() error {
			for _, st := range Status(ctx, rs, e.Regions()) {
				for _, src := range st.Sources {
					if w := want(st.Region, src.From); w != "" && src.State != w {
						return fmt.Errorf("%s's source of %s is %q, want %q", st.Region, src.From, src.State, w)
					}
				}
			}
			return nil
		}
	}
	everyone := func(state string) func(to, from string) string {
		return func(string, string) string { return state }
	}
	// Quiet: idle everywhere, and it stays so (checked again a few
	// heartbeats later).
	checkFor(t, 20*time.Second, 100*time.Millisecond, states(everyone(LinkIdle)))
	// Past activeWithin: idle sources are kept alive by heartbeats alone.
	holdsFor(t, 2*activeWithin, 100*time.Millisecond, states(everyone(LinkIdle)))

	// Readings flowing from eu-west: its sources read up.
	pubs, stop := startPublishers(t, e)
	defer stop()
	checkFor(t, 20*time.Second, 100*time.Millisecond, states(func(to, from string) string {
		if from == "eu-west" {
			return LinkUp
		}
		return ""
	}))

	// eu-west cut off: every link to and from it is down, the others not.
	e.Link("eu-west").Cut()
	cutOff := func(to, from string) string {
		if to == "eu-west" || from == "eu-west" {
			return LinkDown
		}
		return LinkUp
	}
	checkFor(t, 20*time.Second, 100*time.Millisecond, states(cutOff))
	e.Link("eu-west").Heal()
	checkFor(t, 30*time.Second, 100*time.Millisecond, states(everyone(LinkUp)))
	if pubs["eu-west"].acked.Load() == 0 {
		t.Fatal("eu-west published nothing")
	}
}

// TestLinkStateFollowsACutAndAHeal: `stream status` and the page read a
// cut link down within 2 s of the cut, and the link back within 2 s of its
// readings arriving again. Before SourceStatus.Reaches a cut read down
// only once the source had heard nothing for activeWithin (3 s), and the
// demo's caches and polls added up to 3 s more.
func TestLinkStateFollowsACutAndAHeal(t *testing.T) {
	e := startTestRegions(t)
	rs := connectAll(t, e)
	ctx := context.Background()
	mender := NewMender(DefaultTopology(DefaultRegions), rs, func(ctx context.Context) []RegionStatus {
		return Status(ctx, rs, e.Regions())
	}, slog.New(slog.DiscardHandler))
	mctx, stopMender := context.WithCancel(ctx)
	defer stopMender()
	go mender.Run(mctx)
	_, stop := startPublishers(t, e)
	defer stop()

	// euWest is the state of every link to and from eu-west, "" while
	// they differ.
	euWest := func() (string, map[string]string) {
		all := map[string]string{}
		for _, st := range Status(ctx, rs, e.Regions()) {
			for _, src := range st.Sources {
				if st.Region == "eu-west" || src.From == "eu-west" {
					all[src.From+">"+st.Region] = src.State
				}
			}
		}
		first := ""
		for _, s := range all {
			if first == "" {
				first = s
			} else if s != first {
				return "", all
			}
		}
		if len(all) != 4 {
			return "", all
		}
		return first, all
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if s, all := euWest(); s != LinkUp {
			return fmt.Errorf("links of eu-west before the cut: %v, want all up", all)
		}
		return nil
	})

	const within = 2 * time.Second
	cut := time.Now()
	e.Link("eu-west").Cut()
	var all map[string]string
	for s := ""; s != LinkDown; {
		if time.Since(cut) > within {
			t.Fatalf("links of eu-west %.1f s after the cut: %v, want all down", time.Since(cut).Seconds(), all)
		}
		s, all = euWest()
	}
	t.Logf("every link of eu-west read down %.2f s after the cut", time.Since(cut).Seconds())

	// Down, truthfully, for as long as the cut lasts.
	holdsFor(t, 2*activeWithin, 100*time.Millisecond, func() error {
		if s, all := euWest(); s != LinkDown {
			return fmt.Errorf("links of eu-west during the cut: %v, want all down", all)
		}
		return nil
	})

	// After the heal: from the moment eu-west's readings reach us-east
	// again, us-east's source of eu-west reads back within 2 s.
	us, err := rs["us-east"].Stream(ctx, ReadingsStream)
	if err != nil {
		t.Fatal(err)
	}
	lastFromEU := func() uint64 {
		m, err := us.GetLastMsgForSubject(ctx, protocol.ReadingsOf("eu-west"))
		if err != nil {
			return 0
		}
		return m.Sequence
	}
	before := lastFromEU()
	heal := time.Now()
	e.Link("eu-west").Heal()
	var arrived, back time.Time
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ; arrived.IsZero() || back.IsZero(); <-tick.C {
		if time.Since(heal) > 30*time.Second {
			t.Fatalf("30 s after the heal: readings arrived %v, link back %v", !arrived.IsZero(), !back.IsZero())
		}
		if arrived.IsZero() && lastFromEU() > before {
			arrived = time.Now()
		}
		if back.IsZero() {
			for _, st := range Status(ctx, rs, e.Regions()) {
				for _, src := range st.Sources {
					if st.Region == "us-east" && src.From == "eu-west" && src.State != LinkDown {
						back = time.Now()
					}
				}
			}
		}
		if !arrived.IsZero() && back.IsZero() && time.Since(arrived) > within {
			t.Fatalf("eu-west's readings reached us-east %.1f s after the heal; its link still read down %.1f s later", arrived.Sub(heal).Seconds(), time.Since(arrived).Seconds())
		}
	}
	t.Logf("after the heal: eu-west's readings reached us-east at %.2f s, the link read back at %.2f s", arrived.Sub(heal).Seconds(), back.Sub(heal).Seconds())
}

func TestSourceState(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		src    SourceStatus
		newest time.Time
		want   string
	}{
		{"heard from, nothing behind, origin quiet", SourceStatus{Connected: true}, now.Add(-time.Minute), LinkIdle},
		{"heard from, origin has no readings", SourceStatus{Connected: true}, time.Time{}, LinkIdle},
		{"heard from, nothing behind, origin busy", SourceStatus{Connected: true}, now.Add(-100 * time.Millisecond), LinkUp},
		{"a few in flight", SourceStatus{Connected: true, LagMessages: 40, LagSeconds: 0.01}, now, LinkUp},
		{"seconds behind after a heal", SourceStatus{Connected: true, LagMessages: 4000, LagSeconds: 12}, now, LinkCatchingUp},
		{"lag unknown: origin cannot be asked", SourceStatus{Connected: true, LagMessages: 10, LagSeconds: -1}, time.Time{}, LinkUp},
		{"not heard from", SourceStatus{Connected: false}, now.Add(-time.Minute), LinkDown},
		{"not heard from, behind", SourceStatus{Connected: false, LagMessages: 900, LagSeconds: 9}, now, LinkDown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.src.state(c.newest, now); got != c.want {
				t.Fatalf("state = %q, want %q", got, c.want)
			}
		})
	}
}

// holdsFor checks f every interval for d and fails the test the first time
// it returns an error.
func holdsFor(t *testing.T, d, every time.Duration, f func() error) {
	t.Helper()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		if err := f(); err != nil {
			t.Fatalf("not held for %s: %v", d, err)
		}
	}
}
