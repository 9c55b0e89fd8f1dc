package storage_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/chserver"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// regionLoad publishes readings into one region's READINGS, as that
// region's ingest would, until stopped: devices <prefix>-NN, boot 1. A
// publish that fails (the region's server is gone) is retried with the same
// message id until acknowledged, for up to a minute, as ingest's
// redelivery would: the count acknowledged is exact across a restart.
type regionLoad struct {
	region string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	acked  atomic.Uint64
}

func startRegionLoad(t *testing.T, e *stream.Embedded, region, prefix string, devices, rate int) *regionLoad {
	t.Helper()
	nc, err := nats.Connect(e.URL(region), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connecting to %s: %v", region, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &regionLoad{region: region, cancel: cancel, done: make(chan error, 1)}
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		seqs := make([]uint64, devices)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				l.done <- nil
				return
			case <-tick.C:
			}
			d := i % devices
			r := protocol.Reading{Version: 1, Device: fmt.Sprintf("%s-%02d", prefix, d), Boot: 1, Seq: seqs[d] + 1, TS: time.Now().UnixMilli()}
			for j, m := range metricNames {
				r.Metrics = append(r.Metrics, protocol.Metric{Name: m, Value: float64(r.Seq) + float64(j)})
			}
			msg := nats.NewMsg("telemetry." + region + ".ld." + r.Device)
			msg.Data = protocol.AppendEncode(nil, r)
			msg.Header.Set(jetstream.MsgIDHeader, r.ID())
			msg.Header.Set(protocol.HeaderReceived, strconv.FormatInt(time.Now().UnixMilli(), 10))
			if err := poll.Until(time.Minute, 50*time.Millisecond, func() error {
				pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer pcancel()
				_, err := js.PublishMsg(pctx, msg)
				return err
			}); err != nil {
				l.done <- fmt.Errorf("publishing %s in %s: %w", r.ID(), region, err)
				return
			}
			seqs[d]++
			l.acked.Add(1)
		}
	}()
	t.Cleanup(func() { l.stop(t) })
	return l
}

// stop ends the load and returns how many readings the region acknowledged.
func (l *regionLoad) stop(t *testing.T) uint64 {
	t.Helper()
	l.once.Do(func() {
		l.cancel()
		if err := <-l.done; err != nil {
			t.Errorf("load: %v", err)
		}
	})
	return l.acked.Load()
}

// waitHeld waits until region's READINGS holds n readings of origin.
func waitHeld(t *testing.T, e *stream.Embedded, region, origin string, n uint64) {
	t.Helper()
	nc := testharness.Connect(t, e.URL(region))
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		t.Fatal(err)
	}
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream.ReadingsStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(protocol.ReadingsOf(origin)))
		if err != nil {
			return err
		}
		var held uint64
		for _, c := range info.State.Subjects {
			held += c
		}
		if held != n {
			return fmt.Errorf("%s holds %d readings of %s, want %d", region, held, origin, n)
		}
		return nil
	})
}

// checkStoredOnce waits until ClickHouse holds want distinct readings of the
// devices starting with prefix, then checks that no copy reached an insert:
// count() without FINAL is one row per (reading, metric), and the rollups
// count each reading once.
func checkStoredOnce(t *testing.T, conn driver.Conn, w interface{ Status() storage.Status }, want uint64) {
	t.Helper()
	var rows, distinct, distinctRows, rolled uint64
	query := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(device, boot, seq), uniqExact(device, boot, seq, metric) FROM telemetry.readings").
			Scan(&rows, &distinct, &distinctRows); err != nil {
			return err
		}
		return conn.QueryRow(ctx, "SELECT countMerge(n) FROM telemetry.readings_1m").Scan(&rolled)
	}
	testharness.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		if err := query(); err != nil {
			return err
		}
		if distinct != want {
			return fmt.Errorf("%d distinct readings stored, want %d; writer %+v", distinct, want, w.Status())
		}
		// The rollups' part of an insert may commit just after the
		// readings' part: wait until they have caught up (or overshot,
		// which the check below reports).
		if wantRows := want * uint64(len(metricNames)); rolled < wantRows {
			return fmt.Errorf("rollups count %d rows, want %d", rolled, wantRows)
		}
		return nil
	})
	if err := query(); err != nil {
		t.Fatal(err)
	}
	if wantRows := want * uint64(len(metricNames)); rows != wantRows || distinctRows != wantRows || rolled != wantRows {
		t.Errorf("count() %d, uniqExact rows %d, rollups %d; want %d each: a copy reached an insert", rows, distinctRows, rolled, wantRows)
	}
}

// loadEveryRegion publishes 100 readings a second from 5 devices in each
// region.
func loadEveryRegion(t *testing.T, e *stream.Embedded) map[string]*regionLoad {
	t.Helper()
	loads := map[string]*regionLoad{}
	for _, r := range []struct{ region, prefix string }{{"us-east", "ue"}, {"eu-west", "ew"}, {"ap-south", "as"}} {
		loads[r.region] = startRegionLoad(t, e, r.region, r.prefix, 5, 100)
	}
	return loads
}

// waitForWriter waits until the writer's status is ok, said as what.
func waitForWriter(t *testing.T, w interface{ Status() storage.Status }, what string, ok func(storage.Status) bool) {
	t.Helper()
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if st := w.Status(); !ok(st) {
			return fmt.Errorf("want %s; writer %+v", what, st)
		}
		return nil
	})
}

// failoverServers starts what a failover test needs: ClickHouse, the
// regions, and a connection to ClickHouse to count what was stored.
func failoverServers(t *testing.T) (*chserver.Server, *stream.Embedded, driver.Conn) {
	t.Helper()
	ch := testharness.ClickHouse(t)
	e := testharness.Regions(t)
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ch, e, conn
}

func failoverConfig(ch string, e *stream.Embedded, home string, fallbacks ...string) storage.Config {
	cfg := storage.Config{
		NATSURL:         e.URLAs(home, "storage"),
		Domain:          home,
		ClickHouseAddr:  ch,
		BatchSize:       50,
		FlushInterval:   100 * time.Millisecond,
		AckWait:         5 * time.Second,
		RetryBackoff:    50 * time.Millisecond,
		MaxRetryBackoff: 500 * time.Millisecond,
		DrainTimeout:    2 * time.Second,
		PendingInterval: 200 * time.Millisecond,
		FailoverAfter:   time.Second,
		FailoverMargin:  2 * time.Second,
		Listen:          storage.NoListen,
	}
	for _, f := range fallbacks {
		cfg.Fallbacks = append(cfg.Fallbacks, storage.Fallback{Region: f, NATSURL: e.URLAs(f, "storage")})
	}
	return cfg
}

// TestFailoverWhenRegionServerStops runs a writer on us-east with eu-west
// and ap-south as fallbacks, under load in every region, and shuts
// us-east's server down: the writer moves to eu-west and in the end
// ClickHouse holds every reading of every region exactly once, the overlap
// the new consumer starts with included.
func TestFailoverWhenRegionServerStops(t *testing.T) {
	ch, e, conn := failoverServers(t)

	loads := loadEveryRegion(t, e)
	w := start(t, failoverConfig(ch.Addr(), e, "us-east", "eu-west", "ap-south"))
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.ReadingsStored < 300 {
			return fmt.Errorf("writer stored %d readings, want 300 before the fault; %+v", st.ReadingsStored, st)
		}
		return nil
	})

	// Readings us-east acknowledged but did not pass on before it stopped
	// would wait for its return; that is the stream's business (see
	// stream's restart test), so let them reach eu-west first.
	usEast := loads["us-east"].stop(t)
	waitHeld(t, e, "eu-west", "us-east", usEast)

	down := time.Now()
	e.Server("us-east").Shutdown()
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if st := w.Status(); st.Region != "eu-west" || st.Failovers != 1 {
			return fmt.Errorf("writer %+v, want consuming from eu-west after one failover", st)
		}
		return nil
	})
	t.Logf("moved to eu-west %s after us-east's server stopped (FailoverAfter %s)", time.Since(down).Round(time.Millisecond), time.Second)

	// The other regions go on; the writer stores their new readings.
	before := w.Status().ReadingsStored
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.ReadingsStored < before+300 {
			return fmt.Errorf("writer stored %d readings since the failover, want 300; %+v", st.ReadingsStored-before, st)
		}
		return nil
	})
	total := usEast + loads["eu-west"].stop(t) + loads["ap-south"].stop(t)
	checkStoredOnce(t, conn, w, total)
	st := w.Status()
	t.Logf("%d readings stored once; %d copies kept out of inserts (overlap of the new consumer)", total, st.DuplicatesDropped)
	if st.DuplicatesDropped == 0 {
		t.Errorf("no copy was dropped: the new consumer should have started %s before the last stored reading, under load", 2*time.Second)
	}
	if st.Region != "eu-west" || st.HomeRegion != "us-east" {
		t.Errorf("status %+v, want region eu-west, home us-east", st)
	}
}

// TestFailoverAndBack cuts the writer's own connection to us-east (a relay
// between them), while us-east keeps taking readings: the writer moves to
// eu-west, and back to us-east once the relay is healed, whose consumer
// then delivers again readings already stored from eu-west; none is
// stored twice and none is missing.
func TestFailoverAndBack(t *testing.T) {
	ch, e, conn := failoverServers(t)
	relay, err := stream.NewLink("us-east", e.Server("us-east").Addr().String(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })

	loads := loadEveryRegion(t, e)
	cfg := failoverConfig(ch.Addr(), e, "us-east", "eu-west", "ap-south")
	cfg.NATSURL = "nats://storage:storage@" + relay.Addr()
	w := start(t, cfg)
	waitFor := func(what string, ok func(storage.Status) bool) {
		t.Helper()
		waitForWriter(t, w, what, ok)
	}
	waitFor("300 readings stored", func(st storage.Status) bool { return st.ReadingsStored >= 300 })
	relay.Cut()
	cut := time.Now()
	waitFor("consuming from eu-west", func(st storage.Status) bool { return st.Region == "eu-west" })
	t.Logf("moved to eu-west %s after the cut", time.Since(cut).Round(time.Millisecond))
	n := w.Status().ReadingsStored
	waitFor("300 more readings stored", func(st storage.Status) bool { return st.ReadingsStored >= n+300 })
	relay.Heal()
	healed := time.Now()
	waitFor("back on us-east", func(st storage.Status) bool { return st.Region == "us-east" && st.Failovers == 2 })
	t.Logf("back on us-east %s after the heal", time.Since(healed).Round(time.Millisecond))
	n = w.Status().ReadingsStored
	waitFor("300 more readings stored", func(st storage.Status) bool { return st.ReadingsStored >= n+300 })

	total := loads["us-east"].stop(t) + loads["eu-west"].stop(t) + loads["ap-south"].stop(t)
	checkStoredOnce(t, conn, w, total)
	t.Logf("%d readings stored once; %d copies kept out of inserts", total, w.Status().DuplicatesDropped)
}

// TestFailoverWhenRegionServerStopsAndBack stops us-east's server under
// load in every region (us-east's load waits for it and goes on), and
// starts it again: the writer moves to eu-west, then back home once us-east
// answers again, and ClickHouse holds every reading exactly once, both
// overlaps included.
func TestFailoverWhenRegionServerStopsAndBack(t *testing.T) {
	ch, e, conn := failoverServers(t)

	loads := loadEveryRegion(t, e)
	w := start(t, failoverConfig(ch.Addr(), e, "us-east", "eu-west", "ap-south"))
	waitFor := func(what string, ok func(storage.Status) bool) {
		t.Helper()
		waitForWriter(t, w, what, ok)
	}
	waitFor("300 readings stored", func(st storage.Status) bool { return st.ReadingsStored >= 300 })

	if err := e.StopRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitFor("consuming from eu-west after one failover", func(st storage.Status) bool { return st.Region == "eu-west" && st.Failovers == 1 })
	t.Logf("moved to eu-west %s after us-east's server stopped (FailoverAfter %s)", time.Since(down).Round(time.Millisecond), time.Second)
	n := w.Status().ReadingsStored
	waitFor("300 more readings stored from eu-west", func(st storage.Status) bool { return st.ReadingsStored >= n+300 })

	usEast := loads["us-east"].acked.Load()
	if err := e.StartRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("us-east was down %s", up.Sub(down).Round(time.Millisecond))
	waitFor("back on us-east", func(st storage.Status) bool { return st.Region == "us-east" && st.Failovers == 2 })
	t.Logf("back on us-east %s after its server started again", time.Since(up).Round(time.Millisecond))
	testharness.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if got := loads["us-east"].acked.Load(); got < usEast+100 {
			return fmt.Errorf("us-east acknowledged %d readings since it started again, want 100", got-usEast)
		}
		return nil
	})
	n = w.Status().ReadingsStored
	waitFor("300 more readings stored at home", func(st storage.Status) bool { return st.ReadingsStored >= n+300 })

	total := loads["us-east"].stop(t) + loads["eu-west"].stop(t) + loads["ap-south"].stop(t)
	checkStoredOnce(t, conn, w, total)
	st := w.Status()
	t.Logf("%d readings stored once; %d copies kept out of inserts", total, st.DuplicatesDropped)
	if st.Region != "us-east" || st.HomeRegion != "us-east" || st.Failovers != 2 {
		t.Errorf("status %+v, want region us-east, home us-east, 2 failovers", st)
	}
}

// TestWriterStartsInCutOffRegion starts a writer in eu-west while eu-west
// is cut off from the hub: with JetStream domains the region alone can
// create the consumer, and its readings are stored while it is cut off.
func TestWriterStartsInCutOffRegion(t *testing.T) {
	ch, e, conn := failoverServers(t)
	e.Link("eu-west").Cut()
	defer e.Link("eu-west").Heal()

	l := startRegionLoad(t, e, "eu-west", "ew", 5, 100)
	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := l.acked.Load(); n < 100 {
			return fmt.Errorf("eu-west acknowledged %d readings while cut off, want 100", n)
		}
		return nil
	})
	cfg := failoverConfig(ch.Addr(), e, "eu-west")
	w := start(t, cfg)
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := w.Status(); st.State != storage.StateOK || st.ReadingsStored < 200 {
			return fmt.Errorf("writer %+v, want ok with 200 readings stored", st)
		}
		return nil
	})
	if !e.Link("eu-west").IsCut() {
		t.Fatal("eu-west's link healed by itself")
	}
	checkStoredOnce(t, conn, w, l.stop(t))
}
