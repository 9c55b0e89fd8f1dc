// Command telemetry is the one binary of the pipeline. Each subcommand runs
// one component (or, for demo, all of them in one process).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/telemetry-demo/telemetry/internal/cli"
)

type command struct {
	name     string
	synopsis string
	run      func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "everything in one process: broker, NATS regions, ingest, storage, dashboard, devices", runDemo},
		{"devices", "device simulator and load generator", runDevices},
		{"ingest", "MQTT to JetStream bridge for one region", runIngest},
		{"stream", "apply the JetStream topology (idempotent); `stream status` prints replication state", runStream},
		{"storage", "JetStream to ClickHouse writer, plus the history API", runStorage},
		{"dashboard", "the web dashboard", runDashboard},
		{"bench", "end-to-end load test with a conservation report", runBench},
		{"scenario", "run a failure scenario on a running demo and print its ledger", runScenario},
		{"relay", "the links a scenario cuts in compose, cut and healed on signed requests", runRelay},
		{"mqtt", "devices' MQTT credentials: one device's, or a Mosquitto password file for a fleet", runMQTT},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: telemetry <command> [flags]\n\nA live IoT telemetry pipeline: devices -> MQTT -> ingest -> NATS JetStream -> ClickHouse and a live dashboard.\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.synopsis)
	}
	fmt.Fprintln(w, "\nRun `telemetry <command> --help` for its flags. Every flag can also be set by TELEMETRY_<FLAG>.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp), errors.Is(err, cli.ErrFlagsChecked):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "telemetry %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "telemetry: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage reports a command-line mistake already printed with the usage.
var errUsage = errors.New("usage")
