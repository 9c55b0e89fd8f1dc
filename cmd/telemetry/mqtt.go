package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

const mqttSynopsis = `Devices' MQTT credentials (internal/devicecred): a device logs in as
<region>/<device-type>/<device-id> with a password derived from the fleet
secret, and may publish only on telemetry/<that>.

  telemetry mqtt credential [--fleet-secret S] us-east/thermostat/th-90001
      prints the user name and password of one device, to try the protocol
      by hand (mosquitto_pub -u <user> -P <password> -i th-90001 ...).
  telemetry mqtt passwd [--devices N --regions ... --id-prefix P --gateway N] [--bench-devices N --bench-gateway N] [--witness-devices N] [--base F] [--out F] [--base-acl F --acl-out F]
      writes a Mosquitto password file line for every device of that fleet
      (the flags of telemetry devices), after the lines of --base: Mosquitto
      knows no fleet secret, so it needs each device's line. --bench-devices
      adds the first N devices of telemetry bench's fleet (bench-*, every
      region), so that a load test can run against that Mosquitto;
      --witness-devices those of the scenarios' witnesses (scn-*). Gateways
      get a line each, and --acl-out writes the ACL: --base-acl, then each
      gateway's devices' topics, which Mosquitto needs one by one. --dynsec-out
      writes the dynamic security plugin's first file, where phones go.`

func runMQTT(args []string, stdout, stderr io.Writer) error {
	what := ""
	if len(args) > 0 {
		what, args = args[0], args[1:]
	}
	fs := cli.NewFlagSet("mqtt "+what, mqttSynopsis, stderr)
	var cfg devices.Config
	var files devices.BrokerFiles
	var benchDevices, benchGateway, witnessDevices int
	switch what {
	case "credential":
		cli.SecretVar(fs, &cfg.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "the fleet secret (default: the public demo default)")
	case "passwd", "-h", "--help", "help":
		cfg.RegisterFlags(fs, devices.DefaultDevices, "")
		files.RegisterFlags(fs)
		fs.IntVar(&benchDevices, "bench-devices", 0, "also a line for each of the first N devices of telemetry bench's fleet (ids bench-*, every region)")
		fs.IntVar(&benchGateway, "bench-gateway", 0, "the bench's fleet runs behind gateways of N devices (telemetry bench --gateway N)")
		fs.IntVar(&witnessDevices, "witness-devices", 0, "also a line for each of the first N witness devices of the presenter's scenarios (ids scn-*, every region)")
		if what != "passwd" {
			fs.Usage()
			return flag.ErrHelp
		}
	default:
		fs.Usage()
		return errors.New("want `mqtt credential <region>/<device-type>/<device-id>` or `mqtt passwd`")
	}
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if err := devicecred.ValidSecret(cfg.FleetSecret); err != nil {
		return fmt.Errorf("--fleet-secret: %w", err)
	}
	if what == "credential" {
		if fs.NArg() != 1 {
			return errors.New("want one device: <region>/<device-type>/<device-id>")
		}
		user := fs.Arg(0)
		if _, ok := devicecred.Parse(user); !ok {
			return fmt.Errorf("device %q: want <region>/<device-type>/<device-id>, each lower-case letters, digits and dashes", user)
		}
		_, err := fmt.Fprintf(stdout, "user %s\npassword %s\n", user, devicecred.Password(cfg.FleetSecret, user))
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return devices.WriteBrokerFiles(cfg, files, stdout,
		devices.Config{Devices: benchDevices, Gateway: benchGateway, IDPrefix: bench.DefaultIDPrefix, FleetSecret: cfg.FleetSecret},
		devices.Config{Devices: witnessDevices, IDPrefix: control.WitnessPrefix, FleetSecret: cfg.FleetSecret})
}
