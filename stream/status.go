package stream

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RegionStatus is what one region's streams hold and how far its sources lag.
type RegionStatus struct {
	Region      string         `json:"region"`
	Reachable   bool           `json:"reachable"`
	Error       string         `json:"error,omitempty"`
	Readings    uint64         `json:"readings"`
	DeadLetters uint64         `json:"dead_letters"`
	Sources     []SourceStatus `json:"sources"`
}

// SourceStatus is the replication from one other region into this one.
type SourceStatus struct {
	From string `json:"from"`
	// Lag is how many of From's readings this region has not yet received,
	// as last reported by the server; it is only current while the link is up.
	Lag uint64 `json:"lag"`
	// Active is how long ago the source last had activity; -1 when never.
	Active time.Duration `json:"active_ns"`
	Error  string        `json:"error,omitempty"`
}

// Status asks every region, through nc and the regions' domains, for the
// state of its streams. A region that cannot be reached is reported as such,
// not as an error.
func Status(ctx context.Context, nc *nats.Conn, regions []string) []RegionStatus {
	out := make([]RegionStatus, 0, len(regions))
	for _, region := range regions {
		out = append(out, regionStatus(ctx, nc, region))
	}
	return out
}

func regionStatus(ctx context.Context, nc *nats.Conn, region string) RegionStatus {
	st := RegionStatus{Region: region}
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	readings, err := streamInfo(ctx, js, ReadingsStream)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Reachable = true
	st.Readings = readings.State.Msgs
	for _, si := range readings.Sources {
		src := SourceStatus{From: sourceRegion(si), Lag: si.Lag, Active: si.Active}
		if si.Error != nil {
			src.Error = si.Error.Error()
		}
		st.Sources = append(st.Sources, src)
	}
	if dl, err := streamInfo(ctx, js, DeadLetterStream); err == nil {
		st.DeadLetters = dl.State.Msgs
	}
	return st
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", name, err)
	}
	return info, nil
}

// sourceRegion recovers the region a source replicates from its API prefix
// ($JS.<region>.API).
func sourceRegion(si *jetstream.StreamSourceInfo) string {
	if si.External != nil {
		p := strings.TrimPrefix(si.External.APIPrefix, "$JS.")
		if r, ok := strings.CutSuffix(p, ".API"); ok {
			return r
		}
	}
	return si.Name
}

// WriteStatus prints statuses as a table for `telemetry stream status`.
func WriteStatus(w io.Writer, statuses []RegionStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tREACHABLE\tREADINGS\tDEAD LETTERS\tSOURCE\tLAG (msgs)\tLAST ACTIVE")
	for _, st := range statuses {
		if !st.Reachable {
			fmt.Fprintf(tw, "%s\tno\t-\t-\t-\t-\t%s\n", st.Region, st.Error)
			continue
		}
		if len(st.Sources) == 0 {
			fmt.Fprintf(tw, "%s\tyes\t%d\t%d\t-\t-\t-\n", st.Region, st.Readings, st.DeadLetters)
		}
		for i, src := range st.Sources {
			region, readings, dead := "", "", ""
			if i == 0 {
				region, readings, dead = st.Region, fmt.Sprint(st.Readings), fmt.Sprint(st.DeadLetters)
			}
			active := "never"
			if src.Active >= 0 {
				active = src.Active.Round(time.Millisecond).String() + " ago"
			}
			if src.Error != "" {
				active += " (" + src.Error + ")"
			}
			reach := "yes"
			if i > 0 {
				reach = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", region, reach, readings, dead, src.From, src.Lag, active)
		}
	}
	return tw.Flush()
}
