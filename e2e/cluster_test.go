package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// clusterNode is one nats-server process of a region's cluster.
type clusterNode struct {
	name, conf, client string
	mu                 sync.Mutex
	cmd                *exec.Cmd
	done               chan struct{}
}

// regionCluster is a region as a cluster of nats-server processes: one
// JetStream domain, routes between every pair, and each server a leaf
// node of the hub when there is one.
type regionCluster struct {
	t      *testing.T
	bin    string
	region string
	nodes  []*clusterNode
}

// startRegionCluster starts faultRegion as n servers, on its own.
func startRegionCluster(t *testing.T, n int) *regionCluster {
	t.Helper()
	// nats-server as processes, so that the test can SIGKILL one.
	bin := goBuild(t, "github.com/nats-io/nats-server/v2", "nats-server")
	return startCluster(t, bin, faultRegion, n, "")
}

// startRegions starts a hub and every region of regions as a cluster of
// n servers, each server a leaf node of the hub, as the demo's regions
// are (without its accounts). It returns them by region.
func startRegions(t *testing.T, regions []string, n int) map[string]*regionCluster {
	t.Helper()
	bin := goBuild(t, "github.com/nats-io/nats-server/v2", "nats-server")
	dir := t.TempDir()
	leaf := freeAddr(t)
	hub := &clusterNode{name: "hub", conf: filepath.Join(dir, "hub.conf"), client: freeAddr(t)}
	conf := fmt.Sprintf("server_name: hub\nlisten: %q\nleafnodes { listen: %q }\n", hub.client, leaf)
	if err := os.WriteFile(hub.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	hc := &regionCluster{t: t, bin: bin, region: "hub", nodes: []*clusterNode{hub}}
	hc.start(hub)
	t.Cleanup(func() { hc.kill(hub) })
	out := map[string]*regionCluster{}
	for _, r := range regions {
		out[r] = startCluster(t, bin, r, n, "nats-leaf://"+leaf)
	}
	return out
}

// startCluster starts region as n servers of bin; hubLeaf, if set, is the
// hub's leaf node URL.
func startCluster(t *testing.T, bin, region string, n int, hubLeaf string) *regionCluster {
	t.Helper()
	c := &regionCluster{t: t, bin: bin, region: region}
	dir := t.TempDir()
	var routes []string
	clusterAddrs := make([]string, n)
	for i := range n {
		clusterAddrs[i] = freeAddr(t)
		routes = append(routes, fmt.Sprintf("nats-route://%s", clusterAddrs[i]))
	}
	leafnodes := ""
	if hubLeaf != "" {
		leafnodes = fmt.Sprintf("leafnodes { reconnect: \"1s\", remotes: [ { url: %q } ] }\n", hubLeaf)
	}
	for i := range n {
		name := fmt.Sprintf("%s-%d", region, i+1)
		node := &clusterNode{name: name, conf: filepath.Join(dir, name+".conf"), client: freeAddr(t)}
		conf := fmt.Sprintf(`server_name: %q
listen: %q
jetstream { store_dir: %q, domain: %q }
cluster { name: %q, listen: %q, routes: [%s] }
`, name, node.client, filepath.Join(dir, name), region, region, clusterAddrs[i], `"`+strings.Join(routes, `", "`)+`"`) + leafnodes
		if err := os.WriteFile(node.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, node)
	}
	for _, node := range c.nodes {
		c.start(node)
	}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			c.kill(node)
		}
	})
	return c
}

// URL lists every server of the region, as its clients are given it.
func (c *regionCluster) URL() string {
	var urls []string
	for _, node := range c.nodes {
		urls = append(urls, "nats://"+node.client)
	}
	return strings.Join(urls, ",")
}

func (c *regionCluster) start(node *clusterNode) {
	c.t.Helper()
	cmd := exec.Command(c.bin, "-c", node.conf)
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("starting %s: %v", node.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	node.mu.Lock()
	node.cmd, node.done = cmd, done
	node.mu.Unlock()
}

// kill SIGKILLs node and waits for it to be gone.
func (c *regionCluster) kill(node *clusterNode) {
	node.mu.Lock()
	cmd, done := node.cmd, node.done
	node.cmd = nil
	node.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (c *regionCluster) node(name string) *clusterNode {
	for _, node := range c.nodes {
		if node.name == name {
			return node
		}
	}
	c.t.Fatalf("no server %q in the cluster", name)
	return nil
}

// readingsInfo asks the cluster (any server that answers) for READINGS,
// waiting at most wait for the answer.
func (c *regionCluster) readingsInfo(js jetstream.JetStream, wait time.Duration) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := js.Stream(ctx, stream.ReadingsStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// TestReadingsLeaderKilledUnderLoad runs every region as a cluster of
// three nats-server processes, each server a leaf node of a hub, with
// READINGS and DEADLETTER on three replicas (`telemetry stream --replicas
// 3`), ingest knowing every server of its region. Under load it SIGKILLs
// the server that leads READINGS in the region the devices publish to:
// another takes the lead, every region's READINGS ends with every reading
// once (the other two source them across the hub), and the killed server,
// started again, catches up.
func TestReadingsLeaderKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills it under load; skipped with -short")
	}
	regions := stream.DefaultRegions
	clusters := startRegions(t, regions, 3)
	c := clusters[faultRegion]
	bin := buildTelemetry(t)
	var urls []string
	for _, r := range regions {
		urls = append(urls, r+"="+clusters[r].URL())
	}
	testharness.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var out, errb strings.Builder
		cmd := exec.Command(bin, "stream", "--regions", strings.Join(regions, ","), "--nats", strings.Join(urls, ","),
			"--replicas", "3", "--stream-budget", "256MiB", "--timeout", "10s")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("telemetry stream: %v: %s", err, errb.String())
		}
		return nil
	})
	js := map[string]jetstream.JetStream{}
	for _, r := range regions {
		nc, err := nats.Connect(clusters[r].URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if js[r], err = jetstream.NewWithDomain(nc, r); err != nil {
			t.Fatal(err)
		}
	}
	info, err := c.readingsInfo(js[faultRegion], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("READINGS has %d replicas, cluster %+v: want a leader and two replicas", info.Config.Replicas, info.Cluster)
	}
	if len(info.Config.Sources) != len(regions)-1 {
		t.Fatalf("READINGS of %s sources %d regions, want %d", faultRegion, len(info.Config.Sources), len(regions)-1)
	}

	broker := mosquittoFor(t, devices.Config{Devices: 40, Regions: []string{faultRegion}}).URL()
	in := newIngestProc(t, bin, broker, c.URL())
	in.Start()
	fleet, done := runFleet(t, devices.Config{Broker: broker, Devices: 40, Rate: 2000, Duration: 12 * time.Second})
	testharness.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if s := fleet.Stats(); s.Acked < 4000 {
			return fmt.Errorf("%d readings published", s.Acked)
		}
		return nil
	})
	leader := info.Cluster.Leader
	if info, err = c.readingsInfo(js[faultRegion], 5*time.Second); err == nil {
		leader = info.Cluster.Leader
	}
	killed := c.node(leader)
	killedAt := fleet.Stats().Acked
	c.kill(killed)
	killedTime := time.Now()
	var newLeader string
	// Short requests, so that the new leader is seen as it comes.
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		info, err := c.readingsInfo(js[faultRegion], 250*time.Millisecond)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == leader {
			return fmt.Errorf("READINGS led by %+v", info.Cluster)
		}
		newLeader = info.Cluster.Leader
		return nil
	})
	t.Logf("killed %s, READINGS's leader, after %d readings were published; %s led %.1f s later", leader, killedAt, newLeader, time.Since(killedTime).Seconds())

	// Every region catches up with the devices' last reading: how long
	// after the fleet's end each region's READINGS held them all.
	waitFor(t, done, "devices")
	ended, sent := time.Now(), uint64(fleet.Stats().Acked)
	behind := map[string]time.Duration{}
	testharness.CheckFor(t, 120*time.Second, 100*time.Millisecond, func() error {
		for _, r := range regions {
			if _, ok := behind[r]; ok {
				continue
			}
			n, err := readingsCount(js[r])
			if err != nil {
				return fmt.Errorf("%s: %w", r, err)
			}
			if n < sent {
				return fmt.Errorf("READINGS of %s holds %d of %d readings", r, n, sent)
			}
			behind[r] = time.Since(ended)
		}
		return nil
	})
	// Every publish in flight when the leader died failed ("no
	// responders" until a new one was elected). Once a retried one went
	// through, the others were published again at once, not each after a
	// backoff of its own, which is when ingest logs a retry (a thousand
	// lines, and 50 s behind the devices, before ingest did so).
	b, err := os.ReadFile(in.log)
	if err != nil {
		t.Fatal(err)
	}
	if retries := strings.Count(string(b), "JetStream publish failed; retrying"); retries > 20 {
		t.Errorf("ingest backed off %d messages one after another after the election:\n%.2000s", retries, b)
	}
	var n int
	for _, r := range regions {
		n = checkStoredOnceIn(t, clusters[r].URL(), r, fleet)
	}

	// The killed server, back, holds every reading again.
	c.start(killed)
	testharness.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		info, err := c.readingsInfo(js[faultRegion], 5*time.Second)
		if err != nil {
			return err
		}
		for _, r := range info.Cluster.Replicas {
			if r.Name == leader && r.Current && r.Lag == 0 && !r.Offline {
				return nil
			}
		}
		return fmt.Errorf("%s not current yet: %+v", leader, info.Cluster.Replicas)
	})
	t.Logf("%d readings in every region's READINGS once each; each region held them all this long after the devices stopped: %v; %s, started again, is current", n, behind, leader)
}
