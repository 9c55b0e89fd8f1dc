package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// loadCompose loads compose.yaml, and the override files named after it.
func loadCompose(t *testing.T, overrides ...string) (*types.Project, string) {
	t.Helper()
	root := testharness.RepoRoot(t)
	files := []string{filepath.Join(root, "compose.yaml")}
	for _, o := range overrides {
		files = append(files, filepath.Join(root, o))
	}
	opts, err := composecli.NewProjectOptions(files, composecli.WithWorkingDirectory(root), composecli.WithName("telemetry"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%v do not load: %v", files, err)
	}
	return p, root
}

// TestComposeScaleAddsASecondOfEach: compose.scale.yaml adds, in every
// region, an ingest whose command is the first's with its own instance,
// and a storage writer whose command is storage's, each on the internal
// network only and valid (TestComposeStackForReal runs it).
func TestComposeScaleAddsASecondOfEach(t *testing.T) {
	base, _ := loadCompose(t)
	p, _ := loadCompose(t, "compose.scale.yaml")
	cli.CheckFlagsOnly = true
	defer func() { cli.CheckFlagsOnly = false }()
	for _, name := range []string{"ingest-us-east", "ingest-eu-west", "ingest-ap-south", "storage"} {
		first, second := base.Services[name], p.Services[name+"-2"]
		if second.Name == "" {
			t.Errorf("compose.scale.yaml has no %s-2", name)
			continue
		}
		want := slices.Clone(first.Command)
		if strings.HasPrefix(name, "ingest-") {
			want = slices.Insert(want, 2, "--instance=2")
		}
		if !slices.Equal(second.Command, want) {
			t.Errorf("%s-2 runs %q, want %q: the first's, with an instance of its own", name, second.Command, want)
		}
		if nets := slices.Sorted(maps.Keys(second.Networks)); !slices.Equal(nets, []string{"internal"}) || len(second.Ports) != 0 {
			t.Errorf("%s-2 is on %v with ports %v, want the internal network only", name, nets, second.Ports)
		}
		var out, errb bytes.Buffer
		if code := run(second.Command, &out, &errb); code != 0 {
			t.Errorf("%s-2's command is not a valid invocation (exit %d): %s", name, code, errb.String())
		}
	}
}

// telemetryServices are the services that run our image.
func telemetryServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		s := p.Services[name]
		if s.Build != nil || s.Image == "telemetry:dev" {
			out = append(out, s)
		}
	}
	return out
}

func TestComposeCommandsAreValidInvocations(t *testing.T) {
	p, _ := loadCompose(t)
	services := telemetryServices(p)
	if len(services) < 7 {
		t.Fatalf("only %d telemetry services in compose.yaml", len(services))
	}
	cli.CheckFlagsOnly = true
	defer func() { cli.CheckFlagsOnly = false }()
	for _, s := range services {
		t.Run(s.Name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(s.Command, &out, &errb); code != 0 {
				t.Errorf("command %q is not a valid telemetry invocation (exit %d): %s", s.Command, code, errb.String())
			}
		})
	}
}

// flagValue returns the value of --name=value in cmd.
func flagValue(cmd []string, name string) (string, bool) {
	for _, a := range cmd {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func portOf(t *testing.T, path string, re *regexp.Regexp) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no match for %s", path, re)
	}
	return string(m[1])
}

func TestComposeAddressesAgree(t *testing.T) {
	p, root := loadCompose(t)
	// What each service listens on, from the very files compose mounts.
	// Mosquitto's first listener is the devices', the one after it the
	// services' (ingest and the phones' join), the last the phones'
	// WebSockets.
	mqttListeners := regexp.MustCompile(`(?m)^listener (\d+)(\nprotocol websockets)?`).FindAllStringSubmatch(readFile(t, filepath.Join(root, "deploy/mosquitto/mosquitto.conf")), -1)
	if len(mqttListeners) != 3 || mqttListeners[2][2] == "" {
		t.Fatalf("mosquitto.conf has listeners %q, want the devices', the services' and the phones' WebSockets", mqttListeners)
	}
	devicesPort, servicesPort, phonesPort := mqttListeners[0][1], mqttListeners[1][1], mqttListeners[2][1]
	listens := map[string]string{
		"mosquitto":  devicesPort,
		"clickhouse": "9000", // the image's native protocol port
	}
	natsPort := portOf(t, filepath.Join(root, "deploy/nats/region.conf"), regexp.MustCompile(`(?m)^listen: [0-9.]+:(\d+)`))
	regionOf := map[string]string{} // service -> region
	for name, s := range p.Services {
		if r, ok := s.Environment["REGION"]; ok && r != nil {
			listens[name] = natsPort
			regionOf[name] = *r
		}
	}
	for _, s := range telemetryServices(p) {
		if l, ok := flagValue(s.Command, "listen"); ok {
			_, port, err := net.SplitHostPort(l)
			if err != nil {
				t.Fatalf("%s: --listen=%s: %v", s.Name, l, err)
			}
			listens[s.Name] = port
			if s.HealthCheck != nil && !strings.Contains(strings.Join(s.HealthCheck.Test, " "), ":"+port+"/") {
				t.Errorf("%s: healthcheck %q does not probe its --listen port %s", s.Name, s.HealthCheck.Test, port)
			}
		}
	}

	listens["nats-hub"] = portOf(t, filepath.Join(root, "deploy/nats/hub.conf"), regexp.MustCompile(`(?m)^listen: [0-9.]+:(\d+)`))
	hubLeafPort := portOf(t, filepath.Join(root, "deploy/nats/hub.conf"), regexp.MustCompile(`(?m)^  listen: [0-9.]+:(\d+)`))

	// The relay's links, by the port each listens on: a connection to
	// relay:<port> goes on to that link's target.
	relayLinks := map[string]control.LinkSpec{}
	if s, ok := p.Services["relay"]; ok {
		v, _ := flagValue(s.Command, "links")
		links, err := control.ParseLinks(v)
		if err != nil {
			t.Fatalf("relay --links: %v", err)
		}
		for _, l := range links {
			_, port, err := net.SplitHostPort(l.Listen)
			if err != nil {
				t.Fatalf("relay link %s: %v", l.Name, err)
			}
			relayLinks[port] = l
		}
	}

	// Each service connects to NATS as its own least-privileged user.
	// The mender changes streams (it takes a stalled source out and puts it
	// back), the stream manager's job.
	natsUser := map[string]string{"stream-setup": "telemetry", "stream-mender": "telemetry", "storage": "storage", "dashboard": "dashboard",
		"ingest-us-east": "ingest-us-east", "ingest-eu-west": "ingest-eu-west", "ingest-ap-south": "ingest-ap-south", "relay": "relay"}
	// The relay's link a connection must take: the one a scenario cuts.
	wantLink := func(service, flag string) string {
		switch {
		case flag == "broker" && strings.HasPrefix(service, "ingest-"):
			return service
		case flag == "clickhouse" && service == "storage":
			return control.ClickHouseLink
		case flag == "HUB_LEAF_URL":
			return "leaf-" + service
		}
		return ""
	}
	check := func(service, flag, rawURL, wantRegion string) {
		t.Helper()
		u, err := url.Parse(rawURL)
		if err == nil && strings.HasPrefix(rawURL, "nats://") && u.User.Username() != natsUser[service] {
			t.Errorf("%s --%s connects as %q, want its own user %q", service, flag, u.User.Username(), natsUser[service])
		}
		if err != nil || u.Host == "" {
			host, port, _ := net.SplitHostPort(rawURL)
			u = &url.URL{Host: net.JoinHostPort(host, port)}
		}
		host, port := u.Hostname(), u.Port()
		if link := wantLink(service, flag); link != "" {
			l, ok := relayLinks[port]
			if host != "relay" || !ok || l.Name != link {
				t.Errorf("%s --%s points at %s:%s, want the relay's link %s (a scenario cuts it)", service, flag, host, port, link)
				return
			}
			host, port, _ = net.SplitHostPort(l.Target)
			if flag == "HUB_LEAF_URL" {
				if host != "nats-hub" || port != hubLeafPort {
					t.Errorf("the relay's link %s goes to %s, want nats-hub:%s, the hub's leaf port", link, l.Target, hubLeafPort)
				}
				return
			}
		}
		want, ok := listens[host]
		if !ok {
			t.Errorf("%s --%s points at %s, which is not a service that listens", service, flag, host)
			return
		}
		if port != want {
			t.Errorf("%s --%s points at %s:%s, but %s listens on %s", service, flag, host, port, host, want)
		}
		if wantRegion != "" && regionOf[host] != wantRegion {
			t.Errorf("%s --%s: region %s's server is %s (REGION=%s)", service, flag, wantRegion, host, regionOf[host])
		}
	}
	for name, r := range regionOf {
		u := p.Services[name].Environment["HUB_LEAF_URL"]
		if u == nil {
			t.Errorf("%s: no HUB_LEAF_URL, the leaf connection region.conf makes", name)
			continue
		}
		check(r, "HUB_LEAF_URL", *u, "")
	}
	for _, s := range telemetryServices(p) {
		region, _ := flagValue(s.Command, "region")
		if v, ok := flagValue(s.Command, "broker"); ok {
			listens["mosquitto"] = devicesPort
			if strings.HasPrefix(s.Name, "ingest") {
				listens["mosquitto"] = servicesPort
			}
			check(s.Name, "broker", v, "")
		}
		for _, f := range []string{"clickhouse", "storage-url"} {
			if v, ok := flagValue(s.Command, f); ok {
				check(s.Name, f, v, "")
			}
		}
		if v, ok := flagValue(s.Command, "nats"); ok {
			if strings.Contains(v, "=nats://") { // stream's region=url list
				for _, item := range strings.Split(v, ",") {
					r, u, _ := strings.Cut(item, "=")
					check(s.Name, "nats", u, r)
				}
			} else {
				check(s.Name, "nats", v, region)
			}
		}
		if v, ok := flagValue(s.Command, "phones-dynsec-url"); ok {
			listens["mosquitto"] = servicesPort
			check(s.Name, "phones-dynsec-url", v, "")
		}
		if v, ok := flagValue(s.Command, "phones-ws-port"); ok {
			published := false
			for _, pc := range p.Services["mosquitto"].Ports {
				published = published || pc.Published == v && fmt.Sprint(pc.Target) == phonesPort && pc.HostIP == "127.0.0.1"
			}
			if !published {
				t.Errorf("%s --phones-ws-port=%s: Mosquitto does not publish its WebSocket listener (%s) there on 127.0.0.1", s.Name, v, phonesPort)
			}
		}
		for _, f := range []string{"nats-regions", "nats-fallback"} {
			if v, ok := flagValue(s.Command, f); ok {
				for _, item := range strings.Split(v, ",") {
					r, u, _ := strings.Cut(item, "=")
					check(s.Name, f, u, r)
				}
			}
		}
	}
}

// TestComposeMountsTheFilesTheTestsUse checks that every file compose mounts
// exists and is one of the configuration files the tests and the demo load.
func TestComposeMountsTheFilesTheTestsUse(t *testing.T) {
	p, root := loadCompose(t)
	shared := map[string]bool{
		filepath.Join(root, "deploy/nats"):      true, // embedded by package deploy, loaded by stream.StartEmbedded
		filepath.Join(root, "deploy/mosquitto"): true, // mosquitto.conf, passwd and acl: loaded by testharness.MosquittoBroker; passwd and acl embedded by package deploy for the demo's broker

		// Embedded by package deploy, given by internal/chserver to every
		// ClickHouse it starts.
		filepath.Join(root, "deploy/clickhouse/users.d/telemetry.xml"):  true,
		filepath.Join(root, "deploy/clickhouse/config.d/telemetry.xml"): true,
	}
	mounts := 0
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			mounts++
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist", name, v.Source)
			}
			if !shared[v.Source] {
				t.Errorf("%s mounts %s, which no test uses", name, v.Source)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable", name, v.Source)
			}
		}
	}
	if mounts == 0 {
		t.Fatal("compose.yaml mounts no configuration at all")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestComposeNetworks: every service is on the internal network, the one
// with no way out of the machine; only a service whose ports this machine
// reaches is also on edge, and each of those ports is published on
// 127.0.0.1 only.
func TestComposeNetworks(t *testing.T) {
	p, _ := loadCompose(t)
	if n, ok := p.Networks["internal"]; !ok || !n.Internal {
		t.Errorf("compose.yaml's network internal: %+v, want one marked internal", n)
	}
	if len(p.Services) < 10 {
		t.Fatalf("only %d services in compose.yaml", len(p.Services))
	}
	for name, s := range p.Services {
		if _, ok := s.Networks["internal"]; !ok {
			t.Errorf("%s is not on the internal network: %v", name, s.Networks)
		}
		if _, onEdge := s.Networks["edge"]; onEdge != (len(s.Ports) > 0) {
			t.Errorf("%s: on edge %v with %d published ports; edge is for published ports only", name, onEdge, len(s.Ports))
		}
		if len(s.Networks) > 2 {
			t.Errorf("%s is on %d networks: %v", name, len(s.Networks), s.Networks)
		}
		for _, pc := range s.Ports {
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes port %s on %q, want 127.0.0.1 only", name, pc.Published, pc.HostIP)
			}
		}
	}
}
