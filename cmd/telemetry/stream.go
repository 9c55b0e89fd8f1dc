package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/stream"
)

const streamSynopsis = `Apply the JetStream topology to every region (idempotent: run it again to
change nothing), or with "status" print each region's stream counts and the
replication lag from every other region.

  telemetry stream [flags]          apply
  telemetry stream status [flags]   print replication state`

func runStream(args []string, stdout, stderr io.Writer) error {
	status := false
	if len(args) > 0 && args[0] == "status" {
		status, args = true, args[1:]
	}
	fs := cli.NewFlagSet("stream", streamSynopsis, stderr)
	regions := fs.String("regions", strings.Join(stream.DefaultRegions, ","), "the regions, in order")
	urls := fs.String("nats", "us-east=nats://telemetry:telemetry@127.0.0.1:4222,eu-west=nats://telemetry:telemetry@127.0.0.1:4223,ap-south=nats://telemetry:telemetry@127.0.0.1:4224",
		"region=URL for each region's NATS server (apply); status needs only one reachable region")
	asJSON := fs.Bool("json", false, "status: print JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	var budget int64
	cli.BytesVar(fs, &budget, "stream-budget", stream.DefaultReadingsBudget, "apply: bytes of readings READINGS keeps in each region (e.g. 512MiB, 2GiB); the oldest make room for new ones")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	rs := cli.SplitList(*regions)
	topo := stream.DefaultTopology(rs)
	topo.ReadingsMaxBytes = budget
	if err := topo.Validate(); err != nil {
		return err
	}
	byRegion, err := parseRegionURLs(*urls)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if status {
		return streamStatus(ctx, stdout, rs, byRegion, *asJSON)
	}
	for _, r := range rs {
		if _, ok := byRegion[r]; !ok {
			return fmt.Errorf("no NATS URL for region %s: add %s=nats://host:port to --nats", r, r)
		}
	}
	if err := stream.ApplyURLs(ctx, byRegion, topo); err != nil {
		return err
	}
	for _, r := range rs {
		fmt.Fprintf(stdout, "%s: streams %s and %s and the replication consumers applied\n", r, stream.ReadingsStream, stream.DeadLetterStream)
	}
	fmt.Fprintln(stdout, topo.Budget().Describe(150, 5000))
	return nil
}

func streamStatus(ctx context.Context, stdout io.Writer, regions []string, urls map[string]string, asJSON bool) error {
	rs, conns, err := stream.Connect(urls, regions)
	if err != nil {
		return err
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	st := stream.Status(ctx, rs, regions)
	// Each live ingest beats once a second; a region not heard is shown
	// without its ingest's line.
	beats, err := stream.HearIngest(ctx, conns[0], stream.HeartbeatInterval+500*time.Millisecond)
	if err != nil {
		return err
	}
	stream.WithIngest(st, beats)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return stream.WriteStatus(stdout, st)
}

// parseRegionURLs reads "region=url,region=url".
func parseRegionURLs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range cli.SplitList(s) {
		r, u, ok := strings.Cut(item, "=")
		if !ok || r == "" || u == "" {
			return nil, fmt.Errorf("--nats item %q: want region=nats://host:port", item)
		}
		out[r] = u
	}
	return out, nil
}
