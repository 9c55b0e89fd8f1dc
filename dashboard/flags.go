package dashboard

import (
	"flag"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

// RegisterFlags binds c to the flags of `telemetry dashboard`; regionURLs
// receives --nats-regions, for Standalone.
func (c *Config) RegisterFlags(fs *flag.FlagSet, regionURLs *map[string]string) {
	cli.ListVar(fs, &c.Regions, "regions", stream.DefaultRegions, "the regions, in display order")
	fs.StringVar(&c.NATSURL, "nats", "nats://dashboard:dashboard@127.0.0.1:4222", "NATS URL of the region the dashboard reads from, as the read-only dashboard user (default: its public demo password)")
	fs.StringVar(&c.Domain, "region", "us-east", "the region (JetStream domain) of --nats")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "address of the page and API; use 0.0.0.0:8080 to show it to other machines")
	cli.ListVar(fs, &c.AllowedHosts, "allowed-hosts", nil, "comma-separated host names (no scheme, no port) besides IP addresses and localhost that the dashboard answers to, e.g. a DNS name on the venue network; any other Host is refused (DNS-rebinding guard)")
	cli.ListVar(fs, &c.AllowedOrigins, "allowed-origins", nil, "comma-separated origins (https://host[:port]) of pages besides the dashboard's own that may open its websocket, e.g. behind a reverse proxy")
	fs.StringVar(&c.StorageURL, "storage-url", "http://127.0.0.1:8081", "base URL of the storage service's HTTP API; empty: storage is off")
	cli.SecretVar(fs, &c.StorageToken, "storage-token", "", "storage's --api-token, for a storage service on another machine (its API answers only on loopback without it)")
	cli.RegionURLsVar(fs, regionURLs, "nats-regions", "region=URL for other regions' servers, to measure replication lag even when a region is cut off from the hub (default: ask through --nats), and to read READINGS from, in --regions order, while --region's server is gone")
	fs.DurationVar(&c.FailoverAfter, "failover-after", DefaultFailoverAfter, "how long --region may be unusable before reading from another region, and must answer again before moving back")
}

// Standalone completes c for a dashboard in its own process: the other
// regions' servers in urls (region to URL) become its fallbacks, and the
// replication lag and alerts are measured through each region's own
// server (through NATSURL for those not in urls). It returns the URLs it
// measures through.
func (c *Config) Standalone(urls map[string]string) map[string]string {
	all := map[string]string{}
	for _, r := range c.Regions {
		if u, ok := urls[r]; ok {
			all[r] = u
			if r != c.Domain {
				c.Fallbacks = append(c.Fallbacks, Fallback{Region: r, NATSURL: u})
			}
		}
	}
	if _, ok := all[c.Domain]; !ok {
		all[c.Domain] = c.NATSURL
	}
	if c.StorageURL == "" {
		c.StorageOffReason = "the dashboard was started without --storage-url"
	}
	lag := stream.NewLagCollector(stream.StatusOf(all, c.Regions), stream.StatusInterval)
	c.Replication = ReplicationFrom(lag.Statuses, c.Regions)
	c.Alerts = stream.AlertsFrom(lag.Statuses)
	reg := prometheus.NewRegistry()
	reg.MustRegister(lag)
	c.Gatherer = reg
	return all
}
