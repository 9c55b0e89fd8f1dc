package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

const streamSynopsis = `Apply the JetStream topology to every region (idempotent: run it again to
change nothing), or with "status" print each region's stream counts and the
replication lag from every other region.

  telemetry stream [flags]          apply (--mend: then restart stalled sources until stopped)
  telemetry stream status [flags]   print replication state`

func runStream(args []string, stdout, stderr io.Writer) error {
	status := false
	if len(args) > 0 && args[0] == "status" {
		status, args = true, args[1:]
	}
	fs := cli.NewFlagSet("stream", streamSynopsis, stderr)
	var rs []string
	cli.ListVar(fs, &rs, "regions", stream.DefaultRegions, "the regions, in order")
	byRegion := map[string]string{}
	for i, r := range stream.DefaultRegions {
		byRegion[r] = fmt.Sprintf("nats://telemetry:telemetry@127.0.0.1:%d", 4222+i)
	}
	cli.RegionURLsVar(fs, &byRegion, "nats", "region=URL for each region's NATS server (apply); status needs only one reachable region")
	asJSON := fs.Bool("json", false, "status: print JSON")
	mend := fs.Bool("mend", false, "apply, then keep restarting any source nats-server leaves waiting after its region is back (stream.Mender), until SIGTERM")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	topo := stream.DefaultTopology(nil)
	cli.BytesVar(fs, &topo.ReadingsMaxBytes, "stream-budget", stream.DefaultReadingsBudget, "apply: bytes of readings READINGS keeps in each region (e.g. 512MiB, 2GiB); the oldest make room for new ones")
	fs.IntVar(&topo.Replicas, "replicas", 1, "apply: servers of each region's cluster that hold each stream (3 for a cluster of three)")
	fs.DurationVar(&topo.DuplicateWindow, "duplicate-window", stream.DefaultDuplicateWindow, "apply: how long JetStream remembers a reading's id to drop a second copy (at least 100ms; see telemetry demo --help)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	topo.Regions = rs
	if err := topo.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if status {
		st, err := stream.StatusOnce(ctx, byRegion, rs)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return stream.WriteStatus(stdout, st)
	}
	if err := stream.ApplyURLs(ctx, byRegion, topo); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%v: streams %s and %s and the replication consumers applied\n%s\n", rs, stream.ReadingsStream, stream.DeadLetterStream, topo.Budget().Describe(150, 5000))
	if !*mend {
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	mctx, stop := cli.SignalContext(log)
	defer stop()
	return stream.Mend(mctx, byRegion, topo, log)
}
