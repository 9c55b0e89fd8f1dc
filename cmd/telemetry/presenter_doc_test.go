package main

import (
	"bytes"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/internal/cli"
)

// TestPresenterComposeCommands checks the Docker commands docs/PRESENTER.md
// tells presenters to type against compose.yaml: the services they name
// exist, container and network names follow from the project's name, and
// the witness (`$W`, telemetry bench in the devices service), with each
// step's extra flags, is a valid invocation whose addresses are services
// listening on those ports.
func TestPresenterComposeCommands(t *testing.T) {
	p, root := loadCompose(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "PRESENTER.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.ReplaceAll(string(b), "\\\n", " ") // join continued lines

	verbs := regexp.MustCompile(`docker compose (kill|start|stop|restart|run --rm) ([a-z0-9-]+)`).FindAllStringSubmatch(doc, -1)
	if len(verbs) < 5 {
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
		if want := p.Name + "_default"; m[2] != want {
			t.Errorf("%q: the project's network is %s", m[0], want)
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
	w := regexp.MustCompile(`(?m)^W="docker compose run --rm devices ([^"]+)"`).FindStringSubmatch(doc)
	if w == nil {
		t.Fatal(`PRESENTER.md defines no witness W="docker compose run --rm devices ..."`)
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

	listens := map[string]string{
		"mosquitto":  portOf(t, filepath.Join(root, "deploy/mosquitto/mosquitto.conf"), regexp.MustCompile(`(?m)^listener (\d+)`)),
		"clickhouse": "9000",
	}
	natsPort := portOf(t, filepath.Join(root, "deploy/nats/region.conf"), regexp.MustCompile(`(?m)^listen: [0-9.]+:(\d+)`))
	for name, s := range p.Services {
		if r, ok := s.Environment["REGION"]; ok && r != nil {
			listens[name] = natsPort
		}
	}
	var addrs []string
	for _, f := range []string{"broker", "clickhouse"} {
		if v, ok := flagValue(base, f); ok {
			addrs = append(addrs, v)
		}
	}
	if v, ok := flagValue(base, "nats"); ok {
		for _, item := range strings.Split(v, ",") {
			_, u, _ := strings.Cut(item, "=")
			addrs = append(addrs, u)
		}
	}
	if len(addrs) < 5 {
		t.Errorf("the witness names %d addresses, want the broker, ClickHouse and every region's NATS", len(addrs))
	}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if u, uerr := url.Parse(a); uerr == nil && u.Host != "" {
			host, port, err = u.Hostname(), u.Port(), nil
		}
		if err != nil {
			t.Errorf("witness address %q: %v", a, err)
			continue
		}
		if want, ok := listens[host]; !ok || port != want {
			t.Errorf("witness address %s: %s listens on %q", a, host, want)
		}
	}
}
