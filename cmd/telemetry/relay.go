package main

import (
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

func runRelay(args []string, _, stderr io.Writer) error {
	fs := cli.NewFlagSet("relay", "Relay TCP connections a presenter's scenario may cut (compose: each ingest's MQTT\nconnection, each region's leaf connection to the hub, storage's ClickHouse), and cut or\nheal a link on a request over NATS signed with the presenter token (package control).", stderr)
	var cfg control.RelayConfig
	links := fs.String("links", "", "the links, name=listen>target,... (e.g. leaf-us-east=0.0.0.0:7501>nats-hub:7422)")
	fs.StringVar(&cfg.NATSURL, "nats", "nats://relay:relay@127.0.0.1:4222", "NATS URL where the requests arrive, as the relay user (default: its public demo password)")
	cli.SecretVar(fs, &cfg.Token, "presenter-token", "", "the presenter token requests must be signed with (the dashboard's); empty: every request is refused")
	listen := fs.String("listen", "127.0.0.1:9102", "address of /metrics and /healthz")
	logLevel := cli.LogLevelFlag(fs, "info")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	var err error
	if cfg.Links, err = control.ParseLinks(*links); err != nil {
		return err
	}
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	ln, err := httpserv.Listen(*listen, httpserv.ServiceLimits, log)
	if err != nil {
		return err
	}
	r, err := control.NewRelay(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer r.Close()
	if cfg.Token == "" {
		log.Warn("no --presenter-token: the relay relays, and refuses every request to cut a link")
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(ctx) })
	mux := httpserv.Mux(httpserv.Registry(append(r.Collectors(), ln.Refused)...), r.Ready)
	g.Go(func() error { return httpserv.Serve(ctx, ln, mux, log) })
	return g.Wait()
}
