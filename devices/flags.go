package devices

import (
	"flag"
	"fmt"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// RegisterFlags binds c to the simulator's flags, shared by `telemetry
// devices` and `telemetry bench`, which differ in the defaults of
// --devices and --id-prefix.
func (cfg *Config) RegisterFlags(fs *flag.FlagSet, numDevices int, idPrefix string) {
	fs.StringVar(&cfg.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	cli.SecretVar(fs, &cfg.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "secret each device's own MQTT password is derived from; a device logs in as <region>/<type>/<id> and may publish only on its own topic (default: the public demo default; change it with the broker's)")
	cli.ListVar(fs, &cfg.Regions, "regions", stream.DefaultRegions, "regions the devices are spread over")
	fs.IntVar(&cfg.Devices, "devices", numDevices, "number of devices (each its own MQTT connection, or behind a gateway: --gateway)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "readings per second across the fleet")
	fs.IntVar(&cfg.Batch, "batch", 1, fmt.Sprintf("readings per message: 1 publishes protocol v1, a message per reading; N from 2 to %d publishes protocol v2 batches of up to N consecutive readings of a device (at most %d KiB a message), a partial one after waiting %v, before a reboot and when stopping; --rate stays readings per second",
		protocol.MaxBatchReadings, protocol.MaxBatchBytes>>10, DefaultBatchWait))
	fs.IntVar(&cfg.Gateway, "gateway", 0, fmt.Sprintf("devices per gateway: 0 gives each device its own MQTT connection and credential; N from 1 to %d puts the devices of each region and type behind gateways of N, each one MQTT connection logged in as gateway.<region>.<type>.<gateway-id> that publishes for its devices (ids <gateway-id>-<n>) on their own topics", MaxGatewayDevices))
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish; 0 until interrupted")
	fs.DurationVar(&cfg.RampUp, "ramp-up", 0, "raise the rate linearly from 0 over this long (part of --duration)")
	fs.Int64Var(&cfg.Seed, "seed", 1, "seed of the simulated sensors (same seed, same readings)")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", idPrefix, "put before every device id, which is also its MQTT client id (bench- makes bench-th-00001), so fleets sharing a broker never share ids")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", DefaultMaxInflight, "publishes of one device awaiting their PUBACK; at the limit the device waits")
	fs.IntVar(&cfg.MaxBacklog, "max-backlog", DefaultMaxBacklog, "due readings a waiting or offline device may owe; beyond it they are skipped and counted")
	fs.Float64Var(&cfg.Reboots, "reboots", 0, "chance per reading that the device reboots first (new boot, seq from 1)")
	fs.Float64Var(&cfg.Duplicates, "duplicates", 0, "chance per reading that it is published twice")
	fs.Float64Var(&cfg.Reorder, "reorder", 0, "chance per reading that it is published after the next one")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", 0, fmt.Sprintf("each device's clock is off by a fixed amount up to this, either way (at most %v)", MaxClockSkew))
	fs.Float64Var(&cfg.Chaos, "chaos", 0, "share of messages that are hostile (malformed, wrong types, out of range, oversized, odd names...), each tagged with the reason the pipeline must give")
}
