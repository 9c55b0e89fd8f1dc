package stream

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterRegionLosesNothingWhenItsLeaderStops: with a cluster of
// three servers per region (telemetry demo --nats-cluster 3), READINGS is
// on three replicas; stopping the server that leads it in us-east while
// readings go in, as ingest publishes them (each retried under its id
// until acknowledged), loses and doubles nothing: another server leads,
// us-east and the region sourcing it hold every reading once, and the
// stopped server, started again, is current.
func TestClusterRegionLosesNothingWhenItsLeaderStops(t *testing.T) {
	regions := []string{"us-east", "eu-west"}
	e, err := StartEmbedded(EmbeddedConfig{Regions: regions, DataDir: t.TempDir(), ClusterSize: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if got := e.ServerNames("us-east"); !slices.Equal(got, []string{"us-east-1", "us-east-2", "us-east-3"}) {
		t.Fatalf("us-east's servers: %v", got)
	}
	if n := strings.Count(e.URL("us-east"), "nats://"); n != 3 {
		t.Fatalf("us-east's URL lists %d servers, want 3: %s", n, e.URL("us-east"))
	}
	topo := DefaultTopology(regions)
	topo.Replicas = 3
	ctx := t.Context()
	actx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.Apply(actx, topo); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.URL("us-east"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	const total = 1500
	published := make(chan int, total)
	go func() {
		defer close(published)
		pace := time.NewTicker(2 * time.Millisecond) // about 500 readings/s, as a steady fleet sends them
		defer pace.Stop()
		for i := 1; i <= total; i++ {
			<-pace.C
			msg := nats.NewMsg(fmt.Sprintf("telemetry.us-east.probe.p-%d", i%5))
			msg.Data = []byte("{}")
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("p-%d:1:%d", i%5, i))
			for ctx.Err() == nil { // retried under its id until acknowledged, as ingest does
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.PublishMsg(pctx, msg)
				cancel()
				if err == nil {
					break
				}
			}
			published <- i
		}
	}()
	for i := range published {
		if i == total/4 {
			break
		}
	}
	leader := e.StreamLeader("us-east", ReadingsStream)
	if leader == "" {
		t.Fatal("no server leads us-east's READINGS")
	}
	if err := e.StopServer(leader); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if l := e.StreamLeader("us-east", ReadingsStream); l == "" || l == leader {
			return fmt.Errorf("us-east's READINGS led by %q after stopping %s", l, leader)
		}
		return nil
	})
	for range published { // the rest, through the new leader
	}
	for _, r := range regions {
		rjs, err := jetstream.NewWithDomain(testConn(t, e, r), r)
		if err != nil {
			t.Fatal(err)
		}
		checkFor(t, 60*time.Second, 100*time.Millisecond, func() error {
			info, err := readingsInfo(ctx, rjs)
			if err != nil {
				return err
			}
			if info.State.Msgs != total {
				return fmt.Errorf("%s holds %d readings, want each of %d once", r, info.State.Msgs, total)
			}
			return nil
		})
	}
	if err := e.StartServer(leader); err != nil {
		t.Fatal(err)
	}
	rjs, err := jetstream.NewWithDomain(testConn(t, e, "us-east"), "us-east")
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		info, err := readingsInfo(ctx, rjs)
		if err != nil {
			return err
		}
		if info.Cluster == nil {
			return fmt.Errorf("READINGS has no cluster info")
		}
		for _, p := range info.Cluster.Replicas {
			if p.Name == leader && p.Current {
				return nil
			}
		}
		return fmt.Errorf("%s, started again, is not a current replica: leader %s, replicas %+v", leader, info.Cluster.Leader, info.Cluster.Replicas)
	})
}
