package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/dirlock"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

const demoSynopsis = `Run the whole pipeline in one process: an embedded MQTT broker, one embedded
NATS JetStream server per region joined through a hub, ingest per region,
storage, the dashboard and a fleet of simulated devices.

ClickHouse: --clickhouse ADDR if given; else a clickhouse-server (or
clickhouse) found on PATH, started and stopped by the demo with its data under
--data-dir; else the demo runs without storage and says so.

With --presenter-token the presenter API is on, on the dashboard's address:
POST /api/scenario/<name> runs a failure scenario (telemetry scenario
--help lists them) and GET /api/scenario shows the event log and the
ledgers, both with the header Authorization: Bearer <token>. The dashboard
then shows a presenter panel: type the token once, or open the page as
http://127.0.0.1:8080/#token=<token>; each scenario is marked on the charts
and ends with its ledger on screen.

Ctrl-C stops everything cleanly.`

type demoFlags struct {
	regions       string
	mqtt          string
	natsPorts     string
	listen        string
	storageListen string
	clickhouse    string
	dataDir       string
	devices       int
	rate          float64
	seed          int64
	logLevel      string
	// presenterToken turns the presenter API on; scenarioWindow is how
	// long a scenario's fault lasts unless asked otherwise.
	presenterToken string
	scenarioWindow time.Duration
	// scenarioLead, when set, replaces the scenarios' lead and tail (tests
	// make them short).
	scenarioLead time.Duration
	// insecure lets anonymous MQTT clients in (loopback only); the
	// passwords are those of the broker's device and ingest users.
	insecure                    bool
	fleetSecret, mqttIngestPass string
	// chUsers holds storage's ClickHouse users and passwords only.
	chUsers storage.Config
	// allowedOrigins are other origins whose pages may open the
	// dashboard's websocket, comma-separated.
	allowedOrigins string
	// allowedHosts are host names the dashboard answers to besides IP
	// addresses and localhost, comma-separated.
	allowedHosts string
	// pprof serves Go's profiles on --listen.
	pprof bool
	// streamBudget is READINGS' byte limit in each region.
	streamBudget int64
	// fresh empties the data dir before starting: a rehearsal from zero.
	fresh bool
	// mqttPerAddress bounds the broker's connections from one address.
	mqttPerAddress int
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", demoSynopsis, stderr)
	var f demoFlags
	fs.StringVar(&f.regions, "regions", strings.Join(stream.DefaultRegions, ","), "the regions, in order")
	fs.StringVar(&f.mqtt, "mqtt", "127.0.0.1:1883", "address of the embedded MQTT broker")
	fs.BoolVar(&f.insecure, "insecure", false, "let MQTT clients in without credentials, with access to every topic (only with a loopback --mqtt address)")
	cli.SecretVar(fs, &f.fleetSecret, "fleet-secret", deploy.DemoFleetSecret, "secret every device's own MQTT password is derived from, at least 16 bytes (default: the public demo default; `telemetry mqtt-credential` prints a device's)")
	cli.SecretVar(fs, &f.mqttIngestPass, "mqtt-ingest-password", deploy.DemoMQTTIngestPassword, "password of the broker's user "+deploy.MQTTIngestUser+" (default: the public demo default)")
	fs.IntVar(&f.mqttPerAddress, "mqtt-max-per-address", broker.DefaultMaxConnsPerIP, "MQTT connections the broker takes from one client address (a load generator's whole fleet comes from one); docs/SECURITY.md lists every bound")
	fs.StringVar(&f.natsPorts, "nats-ports", "4222,4223,4224", "NATS client port of each region, in the order of --regions")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "dashboard address")
	fs.StringVar(&f.storageListen, "storage-listen", "127.0.0.1:8081", "storage's HTTP address (status, history, ledger)")
	fs.StringVar(&f.clickhouse, "clickhouse", "", "address (host:port, native protocol) of a running ClickHouse; empty: start one found on PATH, or run without storage; none: run without storage")
	fs.StringVar(&f.chUsers.ClickHouseUser, "clickhouse-user", storage.DefaultClickHouseUser, "ClickHouse user of storage's writer (see docs/STORAGE.md, Users, for an external --clickhouse)")
	cli.SecretVar(fs, &f.chUsers.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseWriterPassword, "password of --clickhouse-user (default: the public demo default)")
	fs.StringVar(&f.chUsers.HistoryUser, "history-user", storage.DefaultHistoryUser, "read-only ClickHouse user of storage's /api/history")
	cli.SecretVar(fs, &f.chUsers.HistoryPassword, "history-password", deploy.DemoClickHouseReaderPassword, "password of --history-user (default: the public demo default)")
	fs.StringVar(&f.allowedHosts, "allowed-hosts", "", "comma-separated host names (no scheme, no port) besides IP addresses and localhost that the dashboard answers to, e.g. a DNS name on the venue network; any other Host is refused (DNS-rebinding guard)")
	fs.StringVar(&f.allowedOrigins, "allowed-origins", "", "comma-separated origins (https://host[:port]) of pages besides the dashboard's own that may open its websocket, e.g. behind a reverse proxy")
	fs.StringVar(&f.dataDir, "data-dir", "demo-data", "where NATS and a demo-started ClickHouse keep their data")
	fs.BoolVar(&f.fresh, "fresh", false, "start from nothing: empty --data-dir first (streams, dead letters, a demo-started ClickHouse's readings and history), so that every count on the page starts at 0; refused while another demo uses the dir")
	cli.BytesVar(fs, &f.streamBudget, "stream-budget", stream.DefaultReadingsBudget, "bytes of readings READINGS keeps in each region (e.g. 512MiB, 2GiB); the oldest make room for new ones, so this is how long storage may be away before readings it did not store are dropped, counted")
	fs.IntVar(&f.devices, "devices", 30, "simulated devices, spread over the regions")
	fs.Float64Var(&f.rate, "rate", 150, "readings per second across the fleet")
	fs.Int64Var(&f.seed, "seed", 1, "seed of the simulated sensors")
	fs.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's profiles of the whole demo at /debug/pprof/ on --listen (off by default: they expose internals)")
	cli.SecretVar(fs, &f.presenterToken, "presenter-token", "", "turns the presenter API (failure scenarios) and the dashboard's presenter panel on, for clients that send this bearer token; empty: off")
	fs.DurationVar(&f.scenarioWindow, "scenario-duration", scenario.DefaultWindow, "how long a scenario's fault lasts unless the request says otherwise")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(f.logLevel)
	if err != nil {
		return err
	}
	// Before starting anything: anonymous MQTT only on loopback.
	if err := (broker.Config{Listen: f.mqtt, Insecure: f.insecure, MaxConnsPerIP: f.mqttPerAddress}).Validate(); err != nil {
		return err
	}
	if f.devices >= f.mqttPerAddress {
		return fmt.Errorf("--devices %d: the fleet connects from one address, which the broker bounds to --mqtt-max-per-address %d; raise it", f.devices, f.mqttPerAddress)
	}
	regions := cli.SplitList(f.regions)
	topo := stream.DefaultTopology(regions)
	topo.ReadingsMaxBytes = f.streamBudget
	if err := topo.Validate(); err != nil {
		return err
	}
	ports, err := parsePorts(f.natsPorts, regions)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return demo(ctx, f, regions, topo, ports, stdout, log)
}

func demo(ctx context.Context, f demoFlags, regions []string, topo stream.Topology, ports map[string]int, out io.Writer, log *slog.Logger) error {
	say := func(format string, a ...any) { fmt.Fprintf(out, "demo: "+format+"\n", a...) }
	// One demo per data dir: a second would open the first's live stores.
	lock, err := dirlock.Acquire(f.dataDir, fmt.Sprintf("telemetry demo (pid %d, dashboard %s, started %s)",
		os.Getpid(), f.listen, time.Now().Format(time.DateTime)))
	if err != nil {
		return fmt.Errorf("%w: stop that demo first (Ctrl-C in its terminal), or give this one another --data-dir", err)
	}
	defer lock.Release()
	if f.fresh {
		if err := lock.Empty(); err != nil {
			return err
		}
		say("fresh start: %s emptied", f.dataDir)
	}
	say("%s (--stream-budget)", topo.Budget().Describe(f.rate, 5000))
	if err := topo.Budget().Check(f.dataDir); err != nil {
		say("WARNING: %v: lower --stream-budget or free some disk", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	p, err := startPipeline(ctx, g, pipelineConfig{
		regions: regions, topo: topo, natsPorts: ports, mqtt: f.mqtt, mqttPerAddress: f.mqttPerAddress, dataDir: f.dataDir,
		mqttAuth:   mqttAuth{insecure: f.insecure, fleetSecret: f.fleetSecret, ingestPassword: f.mqttIngestPass},
		clickhouse: f.clickhouse, storageListen: f.storageListen, chUsers: f.chUsers,
	}, say, log)
	if err != nil {
		g.Wait()
		return err
	}
	defer p.close()

	// The demo serves the dashboard's handler on --listen beside the
	// presenter API; the dashboard's own listener stays on a free loopback
	// port, unused.
	ln, err := httpserv.Listen(f.listen, dashboard.ListenerLimits, log)
	if err != nil {
		p.stop()
		g.Wait()
		return fmt.Errorf("dashboard: %w (use --listen to pick another address)", err)
	}
	defer ln.Close()
	// One /metrics has both HTTP listeners' refusals: a label tells them apart.
	pageReg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"listener": "dashboard"}, pageReg).MustRegister(ln.Refused)
	p.gatherers.add(pageReg)
	dash, err := dashboard.New(dashboard.Config{
		NATSURL:          p.nats.URLAs(p.home, "dashboard"),
		Domain:           p.home,
		Regions:          regions,
		Listen:           "127.0.0.1:0",
		StorageURL:       p.storageURL,
		StorageOffReason: p.storageOff,
		Gatherer:         p.gatherers,
		Replication:      replicationFor(p.status, regions),
		Alerts:           stream.AlertsFrom(p.status),
		AllowedOrigins:   cli.SplitList(f.allowedOrigins),
		AllowedHosts:     cli.SplitList(f.allowedHosts),
		Presenter:        f.presenterToken != "",
		Fallbacks:        dashboardFallbacks(p.nats, p.home, regions),
	}, log)
	if err != nil {
		p.stop()
		g.Wait()
		return fmt.Errorf("%w (use --listen to pick another address)", err)
	}
	defer dash.Close()
	g.Go(func() error { return dash.Run(ctx) })

	var runner *scenario.Runner
	if f.presenterToken != "" {
		target := &pipelineTarget{p: p, log: log}
		defer target.close()
		runner, err = scenario.New(scenario.Config{
			Regions: regions, Window: f.scenarioWindow, Lead: f.scenarioLead, Tail: f.scenarioLead,
			OnEvent: func(e scenario.Event) {
				say("scenario %s (run %d) %s: %s", e.Scenario, e.Run, e.Kind, e.Text)
				dash.MarkScenario(dashboard.ScenarioEvent{Run: e.Run, Scenario: e.Scenario, Kind: e.Kind, Text: e.Text, Time: e.Time})
			},
			OnResult: func(r scenario.Result) {
				dash.ShowLedger(dashboardLedger(r))
				var b strings.Builder
				scenario.WriteResult(&b, r)
				say("%s", strings.TrimRight(b.String(), "\n"))
			},
		}, target, log)
		if err != nil {
			p.stop()
			g.Wait()
			return err
		}
		defer runner.Close()
		g.Go(func() error { return runner.Run(ctx) })
	}
	mux := http.NewServeMux()
	presenter := scenario.Handler(runner, f.presenterToken)
	mux.Handle("/api/scenario", presenter)
	mux.Handle("/api/scenario/", presenter)
	mux.Handle("/", dash.Handler())
	if f.pprof {
		httpserv.Profiling(mux)
		say("profiles           http://%s/debug/pprof/ (--pprof)", ln.Addr())
	}
	// The presenter API and the profiles answer to the same hosts as the
	// dashboard (DNS rebinding: dashboard.CheckHost).
	g.Go(func() error { return httpserv.Serve(ctx, ln, dash.CheckHost(mux), log) })

	fleet, err := devices.New(devices.Config{Broker: p.broker.URL(), FleetSecret: f.fleetSecret, Regions: regions, Devices: f.devices, Rate: f.rate, Seed: f.seed}, log)
	if err != nil {
		p.stop()
		g.Wait()
		return err
	}
	defer fleet.Close()
	// Scenario ledgers count every reading of this fleet in their window.
	p.attachFleet(fleet)
	g.Go(func() error { return fleet.Run(ctx) })

	say("%d devices publishing %.0f readings/s", f.devices, f.rate)
	say("dashboard          http://%s   (Ctrl-C to stop)", ln.Addr())
	for _, n := range exposure("the dashboard", ln.Addr().String(), "set --presenter-token and your own passwords", demoSecretsOfDemo(f)) {
		if n.warn {
			say("WARNING: %s", n.text)
		} else {
			say("%s", n.text)
		}
	}
	if runner != nil {
		say("presenter API      http://%s/api/scenario (bearer token from --presenter-token); try: telemetry scenario cut-region %s --demo-url http://%s", ln.Addr(), regions[len(regions)-1], ln.Addr())
	} else {
		say("presenter API      off: no --presenter-token (or TELEMETRY_PRESENTER_TOKEN), so no scenario buttons and no `telemetry scenario`")
	}
	err = g.Wait()
	say("stopped")
	return err
}

func parsePorts(s string, regions []string) (map[string]int, error) {
	items := cli.SplitList(s)
	if len(items) != len(regions) {
		return nil, fmt.Errorf("--nats-ports has %d ports for %d regions", len(items), len(regions))
	}
	out := map[string]int{}
	for i, it := range items {
		p, err := strconv.Atoi(it)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("--nats-ports: %q is not a port", it)
		}
		out[regions[i]] = p
	}
	return out, nil
}

// dashboardLedger is what the dashboard shows of a finished scenario.
func dashboardLedger(r scenario.Result) dashboard.ScenarioLedger {
	l := dashboard.ScenarioLedger{
		Run: r.Run, Scenario: r.Request.Name, Label: r.Request.String(), End: r.End,
		OK: r.OK, Error: r.Error,
	}
	if r.Ledger != nil {
		l.Sent, l.Acked, l.Stored = r.Ledger.Sent, r.Ledger.Acked, r.Ledger.Stored
		l.Quarantined, l.HostileSent, l.Lost = r.Ledger.Quarantined, r.Ledger.HostileSent, r.Ledger.Lost
		if !r.Ledger.OK && l.Error == "" {
			l.Error = strings.Join(r.Ledger.Problems, "; ")
		}
	} else if l.Error == "" {
		l.Error = "no ledger"
	}
	return l
}

// dashboardFallbacks are the regions other than home, in display order, for
// the dashboard to read from when home's server is gone.
func dashboardFallbacks(nats *stream.Embedded, home string, regions []string) []dashboard.Fallback {
	var fb []dashboard.Fallback
	for _, r := range regions {
		if r != home {
			fb = append(fb, dashboard.Fallback{Region: r, NATSURL: nats.URLAs(r, "dashboard")})
		}
	}
	return fb
}
