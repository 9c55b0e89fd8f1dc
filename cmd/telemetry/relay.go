package main

import (
	"io"

	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/internal/cli"
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
	ctx, stop := cli.SignalContext(log)
	defer stop()
	return control.Serve(ctx, cfg, *listen, log)
}
