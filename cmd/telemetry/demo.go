package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/pipeline"
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

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", demoSynopsis, stderr)
	var f pipeline.DemoConfig
	var regions, natsPorts, allowedHosts, allowedOrigins, logLevel string
	fs.StringVar(&regions, "regions", strings.Join(stream.DefaultRegions, ","), "the regions, in order")
	fs.StringVar(&f.MQTT, "mqtt", "127.0.0.1:1883", "address of the embedded MQTT broker")
	fs.BoolVar(&f.Auth.Insecure, "insecure", false, "let MQTT clients in without credentials, with access to every topic (only with a loopback --mqtt address)")
	cli.SecretVar(fs, &f.Auth.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "secret every device's own MQTT password is derived from, at least 16 bytes (default: the public demo default; `telemetry mqtt-credential` prints a device's)")
	cli.SecretVar(fs, &f.Auth.IngestPassword, "mqtt-ingest-password", deploy.DemoMQTTIngestPassword, "password of the broker's user "+deploy.MQTTIngestUser+" (default: the public demo default)")
	fs.IntVar(&f.MQTTPerAddress, "mqtt-max-per-address", broker.DefaultMaxConnsPerIP, "MQTT connections the broker takes from one client address (a load generator's whole fleet comes from one); docs/SECURITY.md lists every bound")
	fs.StringVar(&natsPorts, "nats-ports", "4222,4223,4224", "NATS client port of each region, in the order of --regions")
	fs.StringVar(&f.Listen, "listen", "127.0.0.1:8080", "dashboard address")
	fs.StringVar(&f.StorageListen, "storage-listen", "127.0.0.1:8081", "storage's HTTP address (status, history, ledger)")
	fs.StringVar(&f.ClickHouse, "clickhouse", "", "address (host:port, native protocol) of a running ClickHouse; empty: start one found on PATH, or run without storage; none: run without storage")
	fs.StringVar(&f.ClickHouseUsers.ClickHouseUser, "clickhouse-user", storage.DefaultClickHouseUser, "ClickHouse user of storage's writer (see docs/STORAGE.md, Users, for an external --clickhouse)")
	cli.SecretVar(fs, &f.ClickHouseUsers.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseWriterPassword, "password of --clickhouse-user (default: the public demo default)")
	fs.StringVar(&f.ClickHouseUsers.HistoryUser, "history-user", storage.DefaultHistoryUser, "read-only ClickHouse user of storage's /api/history")
	cli.SecretVar(fs, &f.ClickHouseUsers.HistoryPassword, "history-password", deploy.DemoClickHouseReaderPassword, "password of --history-user (default: the public demo default)")
	fs.StringVar(&allowedHosts, "allowed-hosts", "", "comma-separated host names (no scheme, no port) besides IP addresses and localhost that the dashboard answers to, e.g. a DNS name on the venue network; any other Host is refused (DNS-rebinding guard)")
	fs.StringVar(&allowedOrigins, "allowed-origins", "", "comma-separated origins (https://host[:port]) of pages besides the dashboard's own that may open its websocket, e.g. behind a reverse proxy")
	fs.StringVar(&f.DataDir, "data-dir", "demo-data", "where NATS and a demo-started ClickHouse keep their data")
	fs.BoolVar(&f.Fresh, "fresh", false, "start from nothing: empty --data-dir first (streams, dead letters, a demo-started ClickHouse's readings and history), so that every count on the page starts at 0; refused while another demo uses the dir")
	cli.BytesVar(fs, &f.StreamBudget, "stream-budget", stream.DefaultReadingsBudget, "bytes of readings READINGS keeps in each region (e.g. 512MiB, 2GiB); the oldest make room for new ones, so this is how long storage may be away before readings it did not store are dropped, counted")
	fs.IntVar(&f.Devices, "devices", 30, "simulated devices, spread over the regions")
	fs.Float64Var(&f.Rate, "rate", 150, "readings per second across the fleet")
	fs.Int64Var(&f.Seed, "seed", 1, "seed of the simulated sensors")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.BoolVar(&f.Profiling, "pprof", false, "also serve Go's profiles of the whole demo at /debug/pprof/ on --listen (off by default: they expose internals)")
	cli.SecretVar(fs, &f.PresenterToken, "presenter-token", "", "turns the presenter API (failure scenarios) and the dashboard's presenter panel on, for clients that send this bearer token; empty: off")
	fs.DurationVar(&f.ScenarioWindow, "scenario-duration", scenario.DefaultWindow, "how long a scenario's fault lasts unless the request says otherwise")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(logLevel)
	if err != nil {
		return err
	}
	f.Regions = cli.SplitList(regions)
	f.AllowedHosts, f.AllowedOrigins = cli.SplitList(allowedHosts), cli.SplitList(allowedOrigins)
	if f.NATSPorts, err = parsePorts(natsPorts, f.Regions); err != nil {
		return err
	}
	d, err := pipeline.NewDemo(f, stdout, log)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return d.Run(ctx)
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
