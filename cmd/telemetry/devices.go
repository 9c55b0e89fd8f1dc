package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
)

const devicesSynopsis = `Simulate a fleet of devices, each its own MQTT client, publishing readings (v1,
or v2 batches with --batch) with QoS 1 at a set total rate, spread over the
regions. Prints a progress line every second and a final report (text, or JSON
with --json).`

func runDevices(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("devices", devicesSynopsis, stderr)
	var cfg devices.Config
	cfg.RegisterFlags(fs, devices.DefaultDevices, "")
	qos := fs.Int("qos", 1, "MQTT QoS of the readings (1 or 2; QoS 0 has no acknowledgement to count)")
	asJSON := fs.Bool("json", false, "print the final report as JSON")
	quiet := fs.Bool("quiet", false, "no progress line")
	logLevel := cli.LogLevelFlag(fs, "warn")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *qos < 1 || *qos > 2 {
		return fmt.Errorf("--qos %d: want 1 or 2 (the simulator counts acknowledgements, and QoS 0 has none)", *qos)
	}
	cfg.QoS = byte(*qos)
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
		fmt.Fprintf(stdout, "devices %d, elapsed %s, sent %d readings in %d messages + %d hostile (%.1f readings/s), acknowledged %d + %d, in flight %d, errors %d, resent %d, skipped %d, reboots %d, duplicates %d, reordered %d, ack latency p50 %s p99 %s\n",
			st.Devices, st.Elapsed.Round(time.Millisecond), st.Sent, st.Messages, st.Hostile, float64(st.Sent+st.Hostile)/max(st.Elapsed.Seconds(), 1e-9),
			st.Acked, st.HostileAcked, st.InFlight, st.Errors, st.Resent, st.Skipped, st.Reboots, st.Duplicates, st.Reordered, st.AckP50, st.AckP99)
	}
	return runErr
}
