package main

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/internal/cli"
)

// TestPresenterComposeCommands checks the Docker commands docs/PRESENTER.md
// tells presenters to type against compose.yaml: the services they name
// exist, container and network names follow from the project's name, and
// the witness (`$W`, telemetry bench on the presenter's machine), with each
// step's extra flags, is a valid invocation whose addresses (its flags or
// the bench's defaults) are ports compose publishes on 127.0.0.1, each of
// the right service.
func TestPresenterComposeCommands(t *testing.T) {
	p, root := loadCompose(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "PRESENTER.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.ReplaceAll(string(b), "\\\n", " ") // join continued lines

	verbs := regexp.MustCompile(`docker compose (kill|start|stop|restart|up -d|run --rm) ([a-z][a-z0-9-]*)`).FindAllStringSubmatch(doc, -1)
	if len(verbs) < 4 {
		t.Fatalf("only %d docker compose commands in PRESENTER.md", len(verbs))
	}
	for _, m := range verbs {
		if _, ok := p.Services[m[2]]; !ok {
			t.Errorf("%q: compose.yaml has no service %s", m[0], m[2])
		}
	}

	network := regexp.MustCompile(`docker network (?:disconnect|connect)((?: --alias [a-z0-9-]+)?) ([a-z0-9_-]+) ([a-z0-9_-]+)`).FindAllStringSubmatch(doc, -1)
	if len(network) < 2 {
		t.Fatalf("only %d docker network commands in PRESENTER.md", len(network))
	}
	for _, m := range network {
		if want := p.Name + "_internal"; m[2] != want {
			t.Errorf("%q: the network the services reach each other on is %s", m[0], want)
		}
		svc, ok := strings.CutSuffix(strings.TrimPrefix(m[3], p.Name+"-"), "-1")
		if _, exists := p.Services[svc]; !ok || !exists || !strings.HasPrefix(m[3], p.Name+"-") {
			t.Errorf("%q: %s is not the container of a service (want %s-<service>-1)", m[0], m[3], p.Name)
		}
		if alias := strings.TrimPrefix(strings.TrimSpace(m[1]), "--alias "); alias != "" && alias != svc {
			t.Errorf("%q: alias %s, want the service name %s, which the others use", m[0], alias, svc)
		}
	}

	// The witness and the extra flags of each step.
	w := regexp.MustCompile(`(?m)^W="bin/telemetry ([^"]+)"`).FindStringSubmatch(doc)
	if w == nil {
		t.Fatal(`PRESENTER.md defines no witness W="bin/telemetry bench ..."`)
	}
	base := strings.Fields(w[1])
	invocations := [][]string{base}
	for _, m := range regexp.MustCompile("`\\$W ([^`]+)`").FindAllStringSubmatch(doc, -1) {
		invocations = append(invocations, append(append([]string(nil), base...), strings.Fields(m[1])...))
	}
	if len(invocations) < 3 {
		t.Errorf("only %d uses of $W with extra flags, want the burst's and the storm's", len(invocations)-1)
	}
	cli.CheckFlagsOnly = true
	defer func() { cli.CheckFlagsOnly = false }()
	for _, args := range invocations {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Errorf("telemetry %q is not a valid invocation (exit %d): %s", args, code, errb.String())
		}
	}

	// What compose publishes: host address -> service and the port it
	// reaches in the container.
	type target struct{ service, port string }
	published := map[string]target{}
	for name, s := range p.Services {
		for _, pc := range s.Ports {
			published[net.JoinHostPort(pc.HostIP, pc.Published)] = target{name, fmt.Sprint(pc.Target)}
		}
	}
	natsPort := portOf(t, filepath.Join(root, "deploy/nats/region.conf"), regexp.MustCompile(`(?m)^listen: [0-9.]+:(\d+)`))
	want := map[string]target{ // address of the witness -> what must be behind it
		flagOr(base, "broker", bench.DemoBroker): {"mosquitto", portOf(t, filepath.Join(root, "deploy/mosquitto/mosquitto.conf"), regexp.MustCompile(`(?m)^listener (\d+)`))},
	}
	if v, ok := flagValue(base, "clickhouse"); ok {
		want[v] = target{"clickhouse", "9000"}
	} else {
		t.Error("the witness has no --clickhouse: storage's /api/status would name clickhouse:9000, which this machine cannot resolve")
	}
	regions := bench.DemoNATS
	if v, ok := flagValue(base, "nats"); ok {
		regions = map[string]string{}
		for _, item := range strings.Split(v, ",") {
			r, u, _ := strings.Cut(item, "=")
			regions[r] = u
		}
	}
	for r, u := range regions {
		want[u] = target{"nats-" + r, natsPort}
	}
	for addr, tgt := range want {
		hostport := addr
		if u, err := url.Parse(addr); err == nil && u.Host != "" {
			hostport = u.Host
		}
		if got, ok := published[hostport]; !ok || got != tgt {
			t.Errorf("witness address %s: compose publishes %+v there, want %s's port %s", addr, got, tgt.service, tgt.port)
		}
	}
}

// flagOr is the value of --name in args, or def.
func flagOr(args []string, name, def string) string {
	if v, ok := flagValue(args, name); ok {
		return v
	}
	return def
}
