package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

func runIngest(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("ingest", "Bridge one region's MQTT topics (telemetry/<region>/#, through the shared subscription\n$share/<group>/telemetry/<region>/# so that several instances split the load) to its\nJetStream streams: valid readings to READINGS, rejected payloads to DEADLETTER with their reason.", stderr)
	var cfg ingest.Config
	fs.StringVar(&cfg.Region, "region", "us-east", "the region this bridge serves")
	fs.StringVar(&cfg.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.StringVar(&cfg.Username, "mqtt-user", deploy.MQTTIngestUser, "MQTT service user of ingest (the broker lets it read every reading)")
	cli.SecretVar(fs, &cfg.Password, "mqtt-password", deploy.DemoMQTTIngestPassword, "MQTT password of --mqtt-user (default: the public demo default; change it with the broker's)")
	fs.StringVar(&cfg.Instance, "instance", "", "name of this instance when several share the region's load (e.g. 1, 2); keep it stable across restarts: the broker keeps this instance's share of the readings in its session until it returns")
	fs.StringVar(&cfg.ClientID, "client-id", "", "MQTT client id of the persistent session (default telemetry-ingest-<region>[-<instance>])")
	fs.StringVar(&cfg.Group, "group", "", "shared subscription group of the region's instances (default ingest-<region>)")
	fs.StringVar(&cfg.NATSURL, "nats", "", "the region's NATS server URL, as the region's ingest user (default: nats://ingest-<region>:<its public demo password>@127.0.0.1:4222)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 1024, "messages taken from MQTT and not yet acknowledged by JetStream; when reached, ingest stops reading (backpressure)")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", 5*time.Second, "wait for one JetStream acknowledgement before retrying")
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", 3, "publishes of a message JetStream refuses outright (e.g. too large for the stream) before it is dead-lettered as publish_failed")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "on shutdown, how long to keep retrying what is in flight; the rest is redelivered by the broker")
	fs.DurationVar(&cfg.Limits.MaxAge, "max-age", protocol.DefaultMaxAge, "oldest reading accepted (older ones are dead-lettered as stale)")
	fs.DurationVar(&cfg.Limits.MaxSkew, "max-skew", protocol.DefaultMaxSkew, "how far in the future a reading's ts may be (further ones are dead-lettered as future)")
	listen := fs.String("listen", "127.0.0.1:9101", "address of /metrics and /healthz")
	profiling := fs.Bool("pprof", false, "also serve Go's profiles at /debug/pprof/ on --listen (off by default: they expose internals)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		user := stream.IngestUser(cfg.Region)
		cfg.NATSURL = fmt.Sprintf("nats://%s:%s@127.0.0.1:4222", user, stream.DemoPasswordFor(user))
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	tuneIngestRuntime()
	ln, err := httpserv.Listen(*listen, httpserv.ServiceLimits, log)
	if err != nil {
		return err
	}
	in, err := ingest.New(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer in.Close()
	ctx, stop := cli.SignalContext(log)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return in.Run(ctx) })
	mux := httpserv.Mux(httpserv.Registry(in.Metrics(), ln.Refused), in.Ready)
	if *profiling {
		httpserv.Profiling(mux)
	}
	g.Go(func() error { return httpserv.Serve(ctx, ln, mux, log) })
	return g.Wait()
}

// tuneIngestRuntime sets the Go runtime for a bridge, unless the GOMAXPROCS
// or GOGC environment variables say otherwise. Ingest's work per reading is
// a chain of short hand-overs between goroutines (the MQTT client's reader,
// the acker, the flushers of both sockets, the NATS client's reader):
// on one thread they are cheap queue operations, on several they are
// wake-ups across threads; and most of what it allocates lives for less
// than a millisecond, so collecting less often costs little memory
// (in-flight messages are bounded by --max-inflight). Measured with
// BenchmarkIngestShareOfBrokerCeiling on 2 cores (docs/INGEST.md), these
// take about a quarter off ingest's CPU time per reading (33 µs to 23 µs).
// At that cost one thread has room for some 40,000 readings/s; for more,
// run more instances (--instance) rather than raising GOMAXPROCS.
func tuneIngestRuntime() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}
