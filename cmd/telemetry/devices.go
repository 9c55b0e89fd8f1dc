package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

const devicesSynopsis = `Simulate a fleet of devices, each its own MQTT client, publishing protocol v1
readings with QoS 1 at a set total rate, spread over the regions. Prints a
progress line every second and a final report (text, or JSON with --json).`

// fleetFlags are the simulator's flags, shared by devices and bench.
func fleetFlags(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
	Float64Var(*float64, string, float64, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	Int64Var(*int64, string, int64, string)
}, cfg *devices.Config, regions *string) {
	fs.StringVar(&cfg.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.StringVar(regions, "regions", strings.Join(stream.DefaultRegions, ","), "regions the devices are spread over")
	fs.IntVar(&cfg.Devices, "devices", 30, "number of devices (each its own MQTT connection)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "readings per second across the fleet")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish; 0 until interrupted")
	fs.Int64Var(&cfg.Seed, "seed", 1, "seed of the simulated sensors (same seed, same readings)")
	fs.StringVar(&cfg.ClientPrefix, "client-prefix", "", "prefix of the devices' MQTT client ids")
}

func runDevices(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("devices", devicesSynopsis, stderr)
	var cfg devices.Config
	var regions string
	fleetFlags(fs, &cfg, &regions)
	qos := fs.Int("qos", 1, "MQTT QoS of the readings (0 or 1)")
	asJSON := fs.Bool("json", false, "print the final report as JSON")
	quiet := fs.Bool("quiet", false, "no progress line")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *qos < 0 || *qos > 1 {
		return fmt.Errorf("--qos %d: want 0 or 1", *qos)
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
		fmt.Fprintf(stdout, "devices %d, elapsed %s, sent %d (%.1f/s), acknowledged %d, in flight %d, errors %d, resent %d, skipped %d, ack latency p50 %s p99 %s\n",
			st.Devices, st.Elapsed.Round(time.Millisecond), st.Sent, float64(st.Sent)/max(st.Elapsed.Seconds(), 1e-9),
			st.Acked, st.InFlight, st.Errors, st.Resent, st.Skipped, st.AckP50, st.AckP99)
	}
	return runErr
}
