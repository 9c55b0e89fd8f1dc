package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/storage"
)

func runStorage(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("storage", "Consume READINGS from one region with a durable consumer and write them to\nClickHouse in batches, acknowledging only after the insert succeeded. Applies\nthe schema migrations at start. Serves /api/status, /api/ledger, /api/history,\n/metrics and /healthz.", stderr)
	var cfg storage.Config
	fs.StringVar(&cfg.NATSURL, "nats", "nats://storage:storage@127.0.0.1:4222", "NATS URL of the region to consume from, as the storage service user (default: its public demo password)")
	fs.StringVar(&cfg.Domain, "region", "us-east", "the region (JetStream domain) of --nats")
	fs.StringVar(&cfg.Durable, "durable", storage.DefaultDurable, "durable consumer name; instances with the same name share the work (the NATS user storage of deploy/nats/accounts.conf may use only \"storage\")")
	fs.StringVar(&cfg.ClickHouseAddr, "clickhouse", storage.DefaultClickHouseAddr, "ClickHouse native protocol address host:port")
	fs.StringVar(&cfg.ClickHouseUser, "clickhouse-user", storage.DefaultClickHouseUser, "ClickHouse user of the writer (creates the schema, inserts)")
	cli.SecretVar(fs, &cfg.ClickHousePassword, "clickhouse-password", deploy.DemoClickHouseWriterPassword, "password of --clickhouse-user (the default is the public DEMO password of deploy/clickhouse/users.d/telemetry.xml)")
	fs.StringVar(&cfg.HistoryUser, "history-user", storage.DefaultHistoryUser, "read-only ClickHouse user of /api/history")
	cli.SecretVar(fs, &cfg.HistoryPassword, "history-password", deploy.DemoClickHouseReaderPassword, "password of --history-user (the default is the public DEMO password of deploy/clickhouse/users.d/telemetry.xml)")
	fs.StringVar(&cfg.Database, "database", storage.DefaultDatabase, "ClickHouse database")
	fs.IntVar(&cfg.BatchSize, "batch-size", storage.DefaultBatchSize, "most readings per insert")
	fs.DurationVar(&cfg.FlushInterval, "flush-interval", storage.DefaultFlushInterval, "longest wait before inserting a partial batch")
	fs.DurationVar(&cfg.AckWait, "ack-wait", storage.DefaultAckWait, "how long JetStream waits for an acknowledgement before delivering a reading again")
	fs.BoolVar(&cfg.CheckAll, "check-all", false, "look every reading up in ClickHouse before inserting it, not only redelivered ones (one more query per batch)")
	fs.StringVar(&cfg.Listen, "listen", storage.DefaultListen, "address of the HTTP API, /metrics and /healthz")
	cli.SecretVar(fs, &cfg.APIToken, "api-token", "", "lets readers on other machines use /api/* with Authorization: Bearer <token>; without it /api/* answers only on this machine (/healthz and /metrics answer everyone)")
	fallbacks := fs.String("nats-fallback", "", "region=URL,... other regions to consume from, in order, while --region's server is gone (every region holds every reading)")
	fs.DurationVar(&cfg.FailoverAfter, "failover-after", storage.DefaultFailoverAfter, "how long a region may be unusable before moving to the next, and must answer again before moving back home")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	fb, err := parseFallbacks(*fallbacks)
	if err != nil {
		return err
	}
	cfg.Fallbacks = fb
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	w, err := storage.New(cfg, log)
	if err != nil {
		return err
	}
	defer w.Close()
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return w.Run(ctx)
}

// parseFallbacks reads region=URL,... keeping the order.
func parseFallbacks(s string) ([]storage.Fallback, error) {
	var out []storage.Fallback
	for _, item := range cli.SplitList(s) {
		r, u, ok := strings.Cut(item, "=")
		if !ok || r == "" || u == "" {
			return nil, fmt.Errorf("--nats-fallback item %q: want region=nats://user:password@host:port", item)
		}
		out = append(out, storage.Fallback{Region: r, NATSURL: u})
	}
	return out, nil
}
