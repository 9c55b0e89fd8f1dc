package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// RegionStatus is what one region's streams hold and how far it lags behind
// each other region.
type RegionStatus struct {
	Region      string         `json:"region"`
	Reachable   bool           `json:"reachable"`
	Error       string         `json:"error,omitempty"`
	Readings    uint64         `json:"readings"`
	DeadLetters uint64         `json:"dead_letters"`
	Sources     []SourceStatus `json:"sources"`
	// Bytes is what READINGS holds, MaxBytes its budget: at the budget,
	// the oldest readings make room for new ones.
	Bytes    uint64 `json:"bytes"`
	MaxBytes int64  `json:"max_bytes"`
	// Storage is storage's consumer in this region, nil where storage
	// does not consume.
	Storage *StorageBacklog `json:"storage,omitempty"`
	// Ingest is the region's ingest's last heartbeat, when heard (see
	// WithIngest).
	Ingest *IngestHeartbeat `json:"ingest,omitempty"`
	// Alert says, when not empty, why this region is not doing its job,
	// in words for the page: readings dropped before storage stored them,
	// or its ingest blocked.
	Alert string `json:"alert,omitempty"`
}

// WithIngest adds to statuses what each region's ingest said in beats (see
// HearIngest); a blocked ingest is the region's alert.
func WithIngest(statuses []RegionStatus, beats map[string]IngestHeartbeat) {
	for i := range statuses {
		st := &statuses[i]
		hb, ok := beats[st.Region]
		if !ok {
			continue
		}
		st.Ingest = &hb
		if hb.Blocked != "" {
			st.Alert = strings.TrimPrefix(st.Alert+"; ", "; ") + "ingest blocked: " + hb.Blocked
		}
	}
}

// StorageBacklog is how far storage's durable consumer (StorageConsumer)
// is behind READINGS in a region.
type StorageBacklog struct {
	// Unstored counts readings in the stream that storage has not
	// acknowledged: not delivered yet, or delivered and not acknowledged.
	Unstored uint64 `json:"unstored"`
	// Dropped counts readings the stream no longer holds that storage
	// never acknowledged: its oldest made room while storage was behind by
	// more than the budget. Zero again once storage moves past the gap
	// (storage's own count, telemetry_storage_discarded_total, stays).
	Dropped uint64 `json:"dropped"`
}

// StorageConsumer is the name of storage's durable consumer on READINGS.
const StorageConsumer = "storage"

// SourceStatus is the replication from one other region into this one.
type SourceStatus struct {
	From string `json:"from"`
	// LagMessages is how many of From's readings this region does not hold
	// yet: the larger of the server's own count (current only while the link
	// is up) and the distance in From's stream sequence between From's
	// newest reading and the newest one held here (an upper bound, as From's
	// stream also holds readings it sourced from others).
	LagMessages uint64 `json:"lag_messages"`
	// LagSeconds is how much of From's history this region misses: the time
	// between the newest reading of From that this region holds and From's
	// newest reading, as stored by From. Zero when caught up; -1 when From
	// cannot be asked.
	LagSeconds float64 `json:"lag_seconds"`
	// Active is how long ago the source last had activity; -1 when never.
	Active time.Duration `json:"active_ns"`
	// Reaches is whether From's JetStream answered through this region's
	// server and the hub, the way the source's own requests go, when the
	// status was taken. A cut link fails it at once, where Active takes
	// activeWithin to tell.
	Reaches bool `json:"reaches"`
	// Connected is whether the source has been active recently and From
	// can be reached.
	Connected bool `json:"connected"`
	// State sums the source up in one word: LinkUp, LinkIdle,
	// LinkCatchingUp or LinkDown.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// The states of a source, the same words in `telemetry stream status`, on
// the dashboard and in the metric telemetry_replication_state.
const (
	// LinkUp: the source is active and within a second of its origin.
	LinkUp = "up"
	// LinkIdle: the source is active (its consumer's heartbeats arrive),
	// holds everything, and the origin has had no new reading for
	// idleAfter. A quiet region is not a broken link.
	LinkIdle = "idle"
	// LinkCatchingUp: the source is active and a second or more behind its
	// origin, as after a cut heals or a burst.
	LinkCatchingUp = "catching up"
	// LinkDown: nothing has arrived from the origin, not even a heartbeat,
	// for activeWithin, or the source reports an error: the link is cut,
	// the origin is gone, or replication is failing.
	LinkDown = "down"
)

// LinkStates lists the states, for metrics that export one series each.
var LinkStates = []string{LinkUp, LinkIdle, LinkCatchingUp, LinkDown}

// idleAfter is how long an origin must have had no new reading for a
// caught-up source to be idle rather than up.
const idleAfter = 5 * time.Second

// catchingUpAfter is how far behind its origin a source must be to be
// catching up rather than up.
const catchingUpAfter = time.Second

// state works out src's state from its activity and lag; newest is the
// time the origin stored its newest reading (zero when it has none or
// cannot be asked).
func (src *SourceStatus) state(newest time.Time, now time.Time) string {
	switch {
	case !src.Connected:
		return LinkDown
	case src.LagMessages > 0 && src.LagSeconds >= catchingUpAfter.Seconds():
		return LinkCatchingUp
	case src.LagMessages == 0 && (newest.IsZero() || now.Sub(newest) >= idleAfter):
		return LinkIdle
	default:
		return LinkUp
	}
}

// streamSourceHeader is the header JetStream adds to a sourced message,
// naming where it came from.
const streamSourceHeader = "Nats-Stream-Source"

// activeWithin is how recent a source's activity must be for it to count as
// connected: a source's consumer sends a heartbeat every second when it has
// nothing else to send (nats-server's sourceHealthHB).
const activeWithin = 3 * time.Second

// Regions addresses every region's JetStream. A region is best asked
// through its own server, so that it can be reached even when it is cut
// off from the hub; Via falls back to asking through any connection and the
// region's domain.
type Regions map[string]jetstream.JetStream

// Connect dials every region's URL and returns their JetStream contexts,
// the connections to close, and the regions that could not be dialled
// (they are asked through the others' connections and the hub instead).
func Connect(urls map[string]string, regions []string, opts ...nats.Option) (Regions, []*nats.Conn, error) {
	rs := Regions{}
	var conns []*nats.Conn
	var errs []error
	for _, r := range regions {
		url, ok := urls[r]
		if !ok {
			continue
		}
		nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(2 * time.Second), nats.Name("telemetry-stream-status")}, opts...)...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r, err))
			continue
		}
		conns = append(conns, nc)
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r, err))
			continue
		}
		rs[r] = js
	}
	if len(conns) == 0 {
		return nil, nil, fmt.Errorf("no region reachable: %w", errors.Join(errs...))
	}
	// Regions without a direct connection are asked through the hub.
	for _, r := range regions {
		if _, ok := rs[r]; !ok {
			if js, err := jetstream.NewWithDomain(conns[0], r); err == nil {
				rs[r] = js
			}
		}
	}
	return rs, conns, nil
}

// Status asks every region for the state of its streams and works out the
// lag between every pair. A region that cannot be reached is reported as
// such, not as an error.
func Status(ctx context.Context, rs Regions, regions []string) []RegionStatus {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The newest own reading of each region, as that region stored it.
	newest := map[string]*jetstream.RawStreamMsg{}
	reachable := map[string]bool{}
	for _, r := range regions {
		if js, ok := rs[r]; ok {
			if s, err := js.Stream(ctx, ReadingsStream); err == nil {
				reachable[r] = true
				if m, err := s.GetLastMsgForSubject(ctx, protocol.ReadingsOf(r)); err == nil {
					newest[r] = m
				}
			}
		}
	}
	paths := reach(ctx, rs, regions)
	out := make([]RegionStatus, 0, len(regions))
	for _, r := range regions {
		out = append(out, regionStatus(ctx, rs, r, newest, paths))
	}
	return out
}

// reachTimeout bounds one reach probe. A cut path usually fails at once
// (no responders: the hub has dropped the interest), a live one answers in
// milliseconds; the bound is for a server too busy to answer.
const reachTimeout = 2 * time.Second

// path is the way from one region's server to another's JetStream.
type path struct{ from, to string }

// reach asks, for every ordered pair of regions, whether from's JetStream
// answers through to's server and the hub, all at once. A region without a
// connection of its own is asked through another's, which says less.
func reach(ctx context.Context, rs Regions, regions []string) map[path]bool {
	ctx, cancel := context.WithTimeout(ctx, reachTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[path]bool{}
	)
	for _, to := range regions {
		js, ok := rs[to]
		if !ok {
			continue
		}
		for _, from := range regions {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				there, err := jetstream.NewWithDomain(js.Conn(), from)
				if err == nil {
					_, err = there.AccountInfo(ctx)
				}
				mu.Lock()
				out[path{from, to}] = err == nil
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return out
}

func regionStatus(ctx context.Context, rs Regions, region string, newest map[string]*jetstream.RawStreamMsg, paths map[path]bool) RegionStatus {
	st := RegionStatus{Region: region}
	js, ok := rs[region]
	if !ok {
		st.Error = "no connection"
		return st
	}
	readings, err := js.Stream(ctx, ReadingsStream)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	info, err := readings.Info(ctx)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Reachable = true
	st.Readings = info.State.Msgs
	st.Bytes, st.MaxBytes = info.State.Bytes, info.Config.MaxBytes
	if c, err := readings.Consumer(ctx, StorageConsumer); err == nil {
		st.Storage = backlog(c.CachedInfo(), info.State)
		if st.Storage.Dropped > 0 {
			st.Alert = fmt.Sprintf("READINGS full in %s: %d readings dropped before storage stored them", region, st.Storage.Dropped)
		}
	}
	for _, si := range info.Sources {
		src := SourceStatus{From: sourceRegion(si), LagMessages: si.Lag, Active: si.Active, LagSeconds: -1}
		src.Reaches = paths[path{src.From, region}]
		src.Connected = si.Error == nil && si.Active >= 0 && si.Active < activeWithin && src.Reaches
		if si.Error != nil {
			src.Error = si.Error.Error()
		}
		lagFrom(ctx, rs, readings, &src, newest[src.From])
		var newestAt time.Time
		if m := newest[src.From]; m != nil {
			newestAt = m.Time
		}
		src.State = src.state(newestAt, time.Now())
		st.Sources = append(st.Sources, src)
	}
	if dl, err := js.Stream(ctx, DeadLetterStream); err == nil {
		if dli, err := dl.Info(ctx); err == nil {
			st.DeadLetters = dli.State.Msgs
		}
	}
	return st
}

// backlog is storage's consumer c against the stream's state.
func backlog(c *jetstream.ConsumerInfo, state jetstream.StreamState) *StorageBacklog {
	b := &StorageBacklog{Unstored: c.NumPending + uint64(c.NumAckPending)}
	if state.FirstSeq > c.AckFloor.Stream+1 && state.Msgs > 0 {
		b.Dropped = state.FirstSeq - 1 - c.AckFloor.Stream
	}
	return b
}

// lagFrom compares the newest reading of src.From held here with From's
// newest, through the Nats-Stream-Source header that sourcing adds (it
// carries the sequence in From's stream).
func lagFrom(ctx context.Context, rs Regions, here jetstream.Stream, src *SourceStatus, theirNewest *jetstream.RawStreamMsg) {
	if theirNewest == nil {
		if _, ok := rs[src.From]; ok {
			// From is reachable and has no readings yet: nothing to lag on.
			src.LagSeconds, src.LagMessages = 0, 0
		}
		return
	}
	var heldSeq uint64
	if m, err := here.GetLastMsgForSubject(ctx, protocol.ReadingsOf(src.From)); err == nil {
		heldSeq = sourceSeq(m.Header.Get(streamSourceHeader))
	}
	if heldSeq >= theirNewest.Sequence {
		src.LagSeconds, src.LagMessages = 0, 0
		return
	}
	src.LagMessages = max(src.LagMessages, theirNewest.Sequence-heldSeq)
	// The time From stored the first reading this region misses is the
	// oldest point of the gap; without it (nothing held yet), From's oldest.
	theirs, err := rs[src.From].Stream(ctx, ReadingsStream)
	if err != nil {
		return
	}
	var gapStart time.Time
	if heldSeq > 0 {
		if m, err := theirs.GetMsg(ctx, heldSeq); err == nil {
			gapStart = m.Time
		}
	} else if info, err := theirs.Info(ctx); err == nil {
		gapStart = info.State.FirstTime
	}
	if !gapStart.IsZero() {
		src.LagSeconds = max(0, theirNewest.Time.Sub(gapStart).Seconds())
	}
}

// sourceSeq reads the origin sequence from a Nats-Stream-Source header,
// "<stream index name> <sequence> ...".
func sourceSeq(h string) uint64 {
	f := strings.Fields(h)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n
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
	fmt.Fprintln(tw, "REGION\tREADINGS\tDEAD LETTERS\tFROM\tLAG (msgs)\tLAG (s)\tLINK")
	defer func() {
		for _, st := range statuses {
			if st.Reachable {
				writeBuffer(w, st)
			}
		}
	}()
	for _, st := range statuses {
		if !st.Reachable {
			fmt.Fprintf(tw, "%s\tunreachable\t\t\t\t\t%s\n", st.Region, st.Error)
			continue
		}
		if len(st.Sources) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t%d\t-\t-\t-\t-\n", st.Region, st.Readings, st.DeadLetters)
		}
		for i, src := range st.Sources {
			region, readings, dead := "", "", ""
			if i == 0 {
				region, readings, dead = st.Region, fmt.Sprint(st.Readings), fmt.Sprint(st.DeadLetters)
			}
			lagS := "?"
			if src.LagSeconds >= 0 {
				lagS = strconv.FormatFloat(src.LagSeconds, 'f', 1, 64)
			}
			link := src.State
			if src.State == LinkDown && src.Active >= 0 {
				link += fmt.Sprintf(" (last heard %s ago)", src.Active.Round(100*time.Millisecond))
			}
			if src.Error != "" {
				link += ": " + src.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", region, readings, dead, src.From, src.LagMessages, lagS, link)
		}
	}
	return tw.Flush()
}

// writeBuffer prints, under the table, how full a region's READINGS is and
// how far storage is behind there, with the alert if any.
func writeBuffer(w io.Writer, st RegionStatus) {
	limit := "no limit"
	if st.MaxBytes > 0 {
		limit = FormatBytes(st.MaxBytes)
	}
	line := fmt.Sprintf("%s: READINGS %s of %s", st.Region, FormatBytes(int64(st.Bytes)), limit)
	if st.MaxBytes > 0 && int64(st.Bytes) >= st.MaxBytes*95/100 {
		line += " (at its budget: the oldest readings make room)"
	}
	if st.Storage != nil {
		line += fmt.Sprintf("; storage %d readings behind", st.Storage.Unstored)
	}
	if st.Ingest != nil {
		line += fmt.Sprintf("; ingest accepted %d", st.Ingest.Accepted)
	}
	if st.Alert != "" {
		line += "; ALERT: " + st.Alert
	}
	fmt.Fprintln(w, line)
}

// AlertsFrom turns status into the dashboard's alerts by region (see
// RegionStatus.Alert): the form dashboard.Config.Alerts takes.
func AlertsFrom(status func(context.Context) []RegionStatus) func(context.Context) (map[string]string, error) {
	return func(ctx context.Context) (map[string]string, error) {
		out := map[string]string{}
		for _, st := range status(ctx) {
			if st.Alert != "" {
				out[st.Region] = st.Alert
			}
		}
		return out, nil
	}
}
