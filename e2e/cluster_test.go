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

// regionCluster is a region (faultRegion) as a cluster of nats-server
// processes: one JetStream domain, routes between every pair.
type regionCluster struct {
	t     *testing.T
	bin   string
	nodes []*clusterNode
}

func startRegionCluster(t *testing.T, n int) *regionCluster {
	t.Helper()
	// nats-server as processes, so that the test can SIGKILL one.
	c := &regionCluster{t: t, bin: goBuild(t, "github.com/nats-io/nats-server/v2", "nats-server")}
	dir := t.TempDir()
	var routes []string
	clusterAddrs := make([]string, n)
	for i := range n {
		clusterAddrs[i] = freeAddr(t)
		routes = append(routes, fmt.Sprintf("nats-route://%s", clusterAddrs[i]))
	}
	for i := range n {
		name := fmt.Sprintf("%s-%d", faultRegion, i+1)
		node := &clusterNode{name: name, conf: filepath.Join(dir, name+".conf"), client: freeAddr(t)}
		conf := fmt.Sprintf(`server_name: %q
listen: %q
jetstream { store_dir: %q, domain: %q }
cluster { name: %q, listen: %q, routes: [%s] }
`, name, node.client, filepath.Join(dir, name), faultRegion, faultRegion, clusterAddrs[i], `"`+strings.Join(routes, `", "`)+`"`)
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

// TestReadingsLeaderKilledUnderLoad runs a region as a cluster of three
// nats-server processes with READINGS and DEADLETTER on three replicas
// (`telemetry stream --replicas 3`), ingest knowing every server. Under
// load it SIGKILLs the server that leads READINGS: another takes the lead,
// every reading ends in READINGS once, and the killed server, started
// again, catches up.
func TestReadingsLeaderKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills it under load; skipped with -short")
	}
	c := startRegionCluster(t, 3)
	bin := buildTelemetry(t)
	testharness.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var out, errb strings.Builder
		cmd := exec.Command(bin, "stream", "--regions", faultRegion, "--nats", faultRegion+"="+c.URL(), "--replicas", "3", "--stream-budget", "256MiB", "--timeout", "10s")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("telemetry stream: %v: %s", err, errb.String())
		}
		return nil
	})
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, faultRegion)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.readingsInfo(js, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("READINGS has %d replicas, cluster %+v: want a leader and two replicas", info.Config.Replicas, info.Cluster)
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
	if info, err = c.readingsInfo(js, 5*time.Second); err == nil {
		leader = info.Cluster.Leader
	}
	killed := c.node(leader)
	killedAt := fleet.Stats().Acked
	c.kill(killed)
	killedTime := time.Now()
	var newLeader string
	// Short requests, so that the new leader is seen as it comes.
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		info, err := c.readingsInfo(js, 250*time.Millisecond)
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

	n := checkFleetStoredOnce(t, c.URL(), fleet, done)

	// The killed server, back, holds every reading again.
	c.start(killed)
	testharness.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		info, err := c.readingsInfo(js, 5*time.Second)
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
	t.Logf("%d readings in READINGS once each; %s, started again, is current", n, leader)
}
