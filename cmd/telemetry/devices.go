package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

const devicesSynopsis = `Simulate a fleet of devices, each its own MQTT client, publishing protocol v1
readings with QoS 1 at a set total rate, spread over the regions. Prints a
progress line every second and a final report (text, or JSON with --json).`

// fleetFlags are the simulator's flags, shared by devices and bench, which
// differ in the defaults of --devices and --id-prefix.
func fleetFlags(fs *flag.FlagSet, cfg *devices.Config, regions *string, numDevices int, idPrefix string) {
	fs.StringVar(&cfg.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	cli.SecretVar(fs, &cfg.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "secret each device's own MQTT password is derived from; a device logs in as <region>/<type>/<id> and may publish only on its own topic (default: the public demo default; change it with the broker's)")
	fs.StringVar(regions, "regions", strings.Join(stream.DefaultRegions, ","), "regions the devices are spread over")
	fs.IntVar(&cfg.Devices, "devices", numDevices, "number of devices (each its own MQTT connection)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "readings per second across the fleet")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish; 0 until interrupted")
	fs.DurationVar(&cfg.RampUp, "ramp-up", 0, "raise the rate linearly from 0 over this long (part of --duration)")
	fs.Int64Var(&cfg.Seed, "seed", 1, "seed of the simulated sensors (same seed, same readings)")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", idPrefix, "put before every device id, which is also its MQTT client id (bench- makes bench-th-00001), so fleets sharing a broker never share ids")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", devices.DefaultMaxInflight, "publishes of one device awaiting their PUBACK; at the limit the device waits")
	fs.IntVar(&cfg.MaxBacklog, "max-backlog", devices.DefaultMaxBacklog, "due readings a waiting or offline device may owe; beyond it they are skipped and counted")
	fs.Float64Var(&cfg.Reboots, "reboots", 0, "chance per reading that the device reboots first (new boot, seq from 1)")
	fs.Float64Var(&cfg.Duplicates, "duplicates", 0, "chance per reading that it is published twice")
	fs.Float64Var(&cfg.Reorder, "reorder", 0, "chance per reading that it is published after the next one")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", 0, fmt.Sprintf("each device's clock is off by a fixed amount up to this, either way (at most %v)", devices.MaxClockSkew))
	fs.Float64Var(&cfg.Chaos, "chaos", 0, "share of messages that are hostile (malformed, wrong types, out of range, oversized, odd names...), each tagged with the reason the pipeline must give")
}

func runDevices(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("devices", devicesSynopsis, stderr)
	var cfg devices.Config
	var regions string
	fleetFlags(fs, &cfg, &regions, devices.DefaultDevices, "")
	qos := fs.Int("qos", 1, "MQTT QoS of the readings (1 or 2; QoS 0 has no acknowledgement to count)")
	asJSON := fs.Bool("json", false, "print the final report as JSON")
	quiet := fs.Bool("quiet", false, "no progress line")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *qos < 1 || *qos > 2 {
		return fmt.Errorf("--qos %d: want 1 or 2 (the simulator counts acknowledgements, and QoS 0 has none)", *qos)
	}
	cfg.QoS = byte(*qos)
	cfg.Regions = cli.SplitList(regions)
	log, err := cli.Logger(*logLevel)
	if err != nil {
		return err
	}
	fleet, err := devices.New(cfg, log)
	if err != nil {
		return err
	}
	defer fleet.Close()
	ctx, stop := cli.SignalContext(log)
	defer stop()

	var wg sync.WaitGroup
	pctx, pcancel := context.WithCancel(ctx)
	if !*quiet {
		wg.Add(1)
		go func() { defer wg.Done(); fleet.Progress(pctx, stderr, time.Second) }()
	}
	runErr := fleet.Run(ctx)
	pcancel()
	wg.Wait()
	st := fleet.Stats()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "devices %d, elapsed %s, sent %d readings + %d hostile (%.1f/s), acknowledged %d + %d, in flight %d, errors %d, resent %d, skipped %d, reboots %d, duplicates %d, reordered %d, ack latency p50 %s p99 %s\n",
			st.Devices, st.Elapsed.Round(time.Millisecond), st.Sent, st.Hostile, float64(st.Sent+st.Hostile)/max(st.Elapsed.Seconds(), 1e-9),
			st.Acked, st.HostileAcked, st.InFlight, st.Errors, st.Resent, st.Skipped, st.Reboots, st.Duplicates, st.Reordered, st.AckP50, st.AckP99)
	}
	return runErr
}
