package pipeline

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// RegisterFlags binds c to the flags of `telemetry demo`; call
// SetFlagDefaults after parsing.
func (c *DemoConfig) RegisterFlags(fs *flag.FlagSet) {
	cli.ListVar(fs, &c.Regions, "regions", stream.DefaultRegions, "the regions, in order")
	fs.StringVar(&c.MQTT, "mqtt", "127.0.0.1:1883", "address of the embedded MQTT broker")
	fs.StringVar(&c.MQTTWS, "mqtt-ws", "", "address of the broker's MQTT over WebSocket listener (ws://<address>/mqtt), for clients in browsers, under the same logins, ACL and bounds; with it, phones join at POST /api/join on the dashboard's address (docs/PROTOCOL.md); empty: none")
	join.RegisterBoundFlags(fs, &c.MaxPhones, &c.PublicURL, &c.JoinLinkTTL)
	fs.BoolVar(&c.Auth.Insecure, "insecure", false, "let MQTT clients in without credentials, with access to every topic (only with a loopback --mqtt address)")
	cli.SecretVar(fs, &c.Auth.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "secret every device's own MQTT password is derived from, at least 16 bytes (default: the public demo default; `telemetry mqtt credential` prints a device's)")
	cli.SecretVar(fs, &c.Auth.IngestPassword, "mqtt-ingest-password", deploy.DemoMQTTIngestPassword, "password of the broker's user "+deploy.MQTTIngestUser+" (default: the public demo default)")
	fs.IntVar(&c.MQTTPerAddress, "mqtt-max-per-address", broker.DefaultMaxConnsPerIP, "MQTT connections the broker takes from one client address (a load generator's whole fleet comes from one); docs/SECURITY.md lists every bound")
	fs.IntVar(&c.NATSCluster, "nats-cluster", 1, fmt.Sprintf("NATS servers per region (1 to %d): above 1 each region is a cluster of that many embedded servers with READINGS and DEADLETTER on every one of them, so that stopping one (the presenter's stop-leader scenario) elects another leader and loses nothing; the first server takes --nats-ports", stream.MaxClusterSize))
	fs.IntVar(&c.Ingests, "ingests", 1, fmt.Sprintf("ingests per region (1 to %d), sharing the region's MQTT subscription: the broker hands each message to one of them; the kill-ingest scenario crashes the first, the others go on with their share, and the first's share waits in its session until it starts again", MaxInstances))
	fs.IntVar(&c.Writers, "writers", 1, fmt.Sprintf("storage writers (1 to %d) sharing one durable JetStream consumer: each batch goes to one of them", MaxInstances))
	fs.StringVar(&c.natsPorts, "nats-ports", "4222,4223,4224", "NATS client port of each region, in the order of --regions")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "dashboard address")
	fs.StringVar(&c.StorageListen, "storage-listen", "127.0.0.1:8081", "storage's HTTP address (status, history, ledger)")
	fs.StringVar(&c.ClickHouse, "clickhouse", "", "address (host:port, native protocol) of a running ClickHouse; empty: start one found on PATH, or run without storage; none: run without storage")
	fs.StringVar(&c.ClickHouseUsers.ClickHouseUser, "clickhouse-user", storage.DefaultClickHouseUser, "ClickHouse user of storage's writer (see docs/STORAGE.md, Users, for an external --clickhouse)")
	cli.SecretVar(fs, &c.ClickHouseUsers.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseWriterPassword, "password of --clickhouse-user (default: the public demo default)")
	fs.StringVar(&c.ClickHouseUsers.HistoryUser, "history-user", storage.DefaultHistoryUser, "read-only ClickHouse user of storage's /api/history")
	cli.SecretVar(fs, &c.ClickHouseUsers.HistoryPassword, "history-password", deploy.DemoClickHouseReaderPassword, "password of --history-user (default: the public demo default)")
	cli.ListVar(fs, &c.AllowedHosts, "allowed-hosts", nil, "comma-separated host names (no scheme, no port) besides IP addresses and localhost that the dashboard answers to, e.g. a DNS name on the venue network; any other Host is refused (DNS-rebinding guard)")
	cli.ListVar(fs, &c.AllowedOrigins, "allowed-origins", nil, "comma-separated origins (https://host[:port]) of pages besides the dashboard's own that may open its websocket, e.g. behind a reverse proxy")
	fs.StringVar(&c.DataDir, "data-dir", "demo-data", "where NATS and a demo-started ClickHouse keep their data")
	fs.BoolVar(&c.Fresh, "fresh", false, "start from nothing: empty --data-dir first (streams, dead letters, a demo-started ClickHouse's readings and history), so that every count on the page starts at 0; refused while another demo uses the dir")
	cli.BytesVar(fs, &c.StreamBudget, "stream-budget", stream.DefaultReadingsBudget, "bytes of readings READINGS keeps in each region (e.g. 512MiB, 2GiB); the oldest make room for new ones, so this is how long storage may be away before readings it did not store are dropped, counted")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", stream.DefaultDuplicateWindow, "how long JetStream remembers a reading's id to drop a second copy (at least 100ms); every region holds the ids of every region's readings of that long in memory, so at a load test's rate a shorter one saves memory and CPU, and a copy re-sent later is left to ClickHouse (docs/ARCHITECTURE.md)")
	fs.IntVar(&c.Devices, "devices", 30, "simulated devices, spread over the regions")
	fs.Float64Var(&c.Rate, "rate", 150, "readings per second across the fleet")
	fs.Int64Var(&c.Seed, "seed", 1, "seed of the simulated sensors")
	fs.BoolVar(&c.Profiling, "pprof", false, "also serve Go's profiles of the whole demo at /debug/pprof/ on --listen (off by default: they expose internals)")
	cli.SecretVar(fs, &c.PresenterToken, "presenter-token", "", "turns the presenter API (failure scenarios) and the dashboard's presenter panel on, for clients that send this bearer token; empty: off")
	fs.DurationVar(&c.ScenarioWindow, "scenario-duration", scenario.DefaultWindow, "how long a scenario's fault lasts unless the request says otherwise")
}

// SetFlagDefaults reads what the flags hold in another form: the NATS
// ports, one per region.
func (c *DemoConfig) SetFlagDefaults() error {
	ports, err := parsePorts(c.natsPorts, c.Regions)
	if err != nil {
		return err
	}
	c.NATSPorts = ports
	return nil
}

// parsePorts reads --nats-ports: a port per region, in order.
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
