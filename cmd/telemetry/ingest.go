package main

import (
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

func runIngest(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("ingest", "Bridge one region's MQTT topics (telemetry/<region>/#, through the shared subscription\n$share/<group>/telemetry/<region>/# so that several instances split the load) to its\nJetStream streams: valid readings to READINGS, rejected payloads to DEADLETTER with their reason.", stderr)
	var cfg ingest.Config
	cfg.RegisterFlags(fs)
	listen := fs.String("listen", "127.0.0.1:9101", "address of /metrics and /healthz")
	profiling := fs.Bool("pprof", false, "also serve Go's profiles at /debug/pprof/ on --listen (off by default: they expose internals)")
	logLevel := cli.LogLevelFlag(fs, "info")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	cfg.SetFlagDefaults()
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	ingest.TuneRuntime()
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
