package stream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

func connectAll(t *testing.T, e *Embedded) Regions {
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
