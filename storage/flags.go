package storage

import (
	"flag"
	"fmt"
	"strings"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
)

// RegisterFlags binds c to the flags of `telemetry storage`, with the
// defaults New would give.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NATSURL, "nats", "nats://storage:storage@127.0.0.1:4222", "NATS URL of the region to consume from, as the storage service user (default: its public demo password)")
	fs.StringVar(&c.Domain, "region", "us-east", "the region (JetStream domain) of --nats")
	fs.StringVar(&c.Durable, "durable", DefaultDurable, "durable consumer name; instances with the same name share the work (the NATS user storage of deploy/nats/accounts.conf may use only \"storage\")")
	fs.StringVar(&c.ClickHouseAddr, "clickhouse", DefaultClickHouseAddr, "ClickHouse native protocol address host:port; for a cluster, members host:port,host:port,... tried in order")
	fs.StringVar(&c.Cluster, "clickhouse-cluster", "", "name of the ClickHouse cluster (remote_servers) of --clickhouse: replicated tables on every member, Distributed tables over them (docs/SCALE.md); empty for one server")
	fs.StringVar(&c.ClickHouseUser, "clickhouse-user", DefaultClickHouseUser, "ClickHouse user of the writer (creates the schema, inserts)")
	cli.SecretVar(fs, &c.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseWriterPassword, "password of --clickhouse-user (the default is the public DEMO password of deploy/clickhouse/users.d/telemetry.xml)")
	fs.StringVar(&c.HistoryUser, "history-user", DefaultHistoryUser, "read-only ClickHouse user of /api/history")
	cli.SecretVar(fs, &c.HistoryPassword, "history-password", deploy.DemoClickHouseReaderPassword, "password of --history-user (the default is the public DEMO password of deploy/clickhouse/users.d/telemetry.xml)")
	fs.StringVar(&c.Database, "database", DefaultDatabase, "ClickHouse database")
	fs.IntVar(&c.BatchSize, "batch-size", DefaultBatchSize, "most readings per insert")
	fs.DurationVar(&c.FlushInterval, "flush-interval", DefaultFlushInterval, "longest wait before inserting a partial batch")
	fs.DurationVar(&c.AckWait, "ack-wait", DefaultAckWait, "how long JetStream waits for an acknowledgement before delivering a reading again")
	fs.BoolVar(&c.CheckAll, "check-all", false, "look every reading up in ClickHouse before inserting it, not only redelivered ones (one more query per batch)")
	fs.StringVar(&c.Listen, "listen", DefaultListen, "address of the HTTP API, /metrics and /healthz")
	cli.SecretVar(fs, &c.APIToken, "api-token", "", "lets readers on other machines use /api/* with Authorization: Bearer <token>; without it /api/* answers only on this machine (/healthz and /metrics answer everyone)")
	fs.Var((*fallbackList)(&c.Fallbacks), "nats-fallback", "region=URL,... other regions to consume from, in order, while --region's server is gone (every region holds every reading)")
	fs.DurationVar(&c.FailoverAfter, "failover-after", DefaultFailoverAfter, "how long a region may be unusable before moving to the next, and must answer again before moving back home")
}

// fallbackList is --nats-fallback: region=URL,... in order.
type fallbackList []Fallback

func (l *fallbackList) String() string {
	var items []string
	for _, f := range *l {
		items = append(items, f.Region+"="+f.NATSURL)
	}
	return strings.Join(items, ",")
}

func (l *fallbackList) Set(s string) error {
	var out []Fallback
	for _, item := range cli.SplitList(s) {
		r, u, ok := strings.Cut(item, "=")
		if !ok || r == "" || u == "" {
			return fmt.Errorf("item %q: want region=nats://user:password@host:port", item)
		}
		out = append(out, Fallback{Region: r, NATSURL: u})
	}
	*l = out
	return nil
}
