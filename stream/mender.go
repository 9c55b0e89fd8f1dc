package stream

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Mender restarts a region's source of another region that nats-server
// leaves waiting although the other region answers again.
//
// A source asks the other region, over the hub, for a consumer. A request
// sent while that region is away (not started yet after a demo restart,
// restarting, or cut off) is never answered, and nats-server v2.15 waits 30
// s before asking again, then backs off; a leaf connection coming back does
// not cut that wait short (nats-io/nats-server#6454 asks for it to be
// configurable). After a demo restart that stalled replication for 30-40 s
// under a load test's burst. The Mender watches every source; one that has
// been down for After while the region it reads from answers through the
// hub (SourceStatus.Reaches) is restarted: its source is taken out of the stream's configuration
// and put back, which makes nats-server ask again at once. The source then
// starts right after the last reading of the other region that the stream
// holds (nats-server keeps that index in the stream's store), so nothing is
// skipped or copied twice.
type Mender struct {
	topo   Topology
	admin  Regions // streams may be changed through these
	status func(context.Context) []RegionStatus
	log    *slog.Logger

	// After is how long a source must have been down, with its other
	// region answering, before it is restarted; Settle how long a source
	// restarted is given to come up before it may be restarted again.
	After, Settle time.Duration
	// Every is how often the sources are looked at.
	Every time.Duration

	downSince map[link]time.Time
	restarted map[link]time.Time
	restarts  atomic.Uint64
}

// link is one region's source of another: readings from From into To.
type link struct{ to, from string }

// Defaults of a Mender.
const (
	DefaultMendAfter  = 2 * time.Second
	DefaultMendSettle = 10 * time.Second
	DefaultMendEvery  = time.Second
)

// NewMender returns a Mender of topo's sources. admin must address every
// region's domain as a user that may update streams; status reports the
// sources (Status, or a LagCollector's cached Statuses).
func NewMender(topo Topology, admin Regions, status func(context.Context) []RegionStatus, log *slog.Logger) *Mender {
	return &Mender{topo: topo, admin: admin, status: status, log: log,
		After: DefaultMendAfter, Settle: DefaultMendSettle, Every: DefaultMendEvery,
		downSince: map[link]time.Time{}, restarted: map[link]time.Time{}}
}

// Restarts is how many sources the Mender has restarted.
func (m *Mender) Restarts() uint64 { return m.restarts.Load() }

// Run looks at the sources every Every until ctx is done.
func (m *Mender) Run(ctx context.Context) error {
	tick := time.NewTicker(m.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		m.check(ctx, time.Now())
	}
}

func (m *Mender) check(ctx context.Context, now time.Time) {
	for _, st := range m.status(ctx) {
		if !st.Reachable {
			continue
		}
		for _, src := range st.Sources {
			l := link{to: st.Region, from: src.From}
			if src.State != LinkDown {
				delete(m.downSince, l)
				continue
			}
			since, ok := m.downSince[l]
			if !ok {
				m.downSince[l] = now
				continue
			}
			if now.Sub(since) < m.After || now.Sub(m.restarted[l]) < m.Settle || !src.Reaches {
				continue
			}
			m.restarted[l] = now
			if err := m.restart(ctx, l); err != nil {
				m.log.Warn("restarting a source", "to", l.to, "from", l.from, "err", err)
				continue
			}
			m.restarts.Add(1)
			m.log.Info("source restarted: down while its region answers", "to", l.to, "from", l.from, "down_for", now.Sub(since).Round(time.Millisecond))
		}
	}
}

// restart takes l's source out of l.to's READINGS and puts it back.
func (m *Mender) restart(ctx context.Context, l link) error {
	js, ok := m.admin[l.to]
	if !ok {
		return fmt.Errorf("no connection to %s", l.to)
	}
	cfg := m.topo.ReadingsConfig(l.to)
	without := cfg
	without.Sources = slices.DeleteFunc(slices.Clone(cfg.Sources), func(s *jetstream.StreamSource) bool { return s.Domain == l.from })
	if _, err := js.UpdateStream(ctx, without); err != nil {
		return fmt.Errorf("taking the source of %s out of %s's %s: %w", l.from, l.to, ReadingsStream, err)
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("putting the source of %s back into %s's %s: %w", l.from, l.to, ReadingsStream, err)
	}
	return nil
}

// Mend runs a Mender of topo's sources in the regions at urls (region ->
// URL of a server of its domain, as the stream manager) until ctx ends:
// for servers that run apart from the pipeline (compose's `telemetry
// stream --mend`), what the demo runs beside its embedded servers.
func Mend(ctx context.Context, urls map[string]string, topo Topology, log *slog.Logger) error {
	admin, conns, err := Connect(urls, topo.Regions, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connecting the mender: %w", err)
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	lag := NewLagCollector(StatusOf(urls, topo.Regions), StatusInterval)
	log.Info("mending the regions' sources", "regions", topo.Regions)
	return NewMender(topo, admin, lag.Statuses, log.With("component", "mender")).Run(ctx)
}
