package dashboard

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/stream"
)

// IngestState is what a region's ingest last said about itself (its
// heartbeat, stream.IngestHeartbeat), on the region's card.
type IngestState struct {
	// Heard is when the last heartbeat arrived; a region cut off from the
	// dashboard's server is not heard.
	Heard time.Time `json:"heard"`
	// Rate is readings per second ingest accepted into its own READINGS,
	// between its last two heartbeats: what the region takes in, whatever
	// happens downstream.
	Rate     float64 `json:"rate"`
	Accepted uint64  `json:"accepted"`
	// Blocked is why ingest cannot publish, since Since; empty while it
	// publishes.
	Blocked string    `json:"blocked,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// heardWithin is how recent a heartbeat must be to be shown: three missed
// beats and the card says nothing of ingest rather than something stale.
const heardWithin = 3 * stream.HeartbeatInterval

// ingestBeats keeps each region's last heartbeat.
type ingestBeats struct {
	last map[string]ingestBeat // guarded by Dashboard.mu
}

type ingestBeat struct {
	hb    stream.IngestHeartbeat
	heard time.Time
	rate  float64
}

// hearIngest keeps every region's ingest heartbeat, through the connection
// READINGS is read through, until ctx ends.
func (d *Dashboard) hearIngest(ctx context.Context) {
	for ctx.Err() == nil {
		f := d.feedCur.Load()
		if f == nil {
			return
		}
		sub, err := f.nc.Subscribe(stream.HeartbeatSubjects, func(m *nats.Msg) { d.heard(time.Now(), m.Data) })
		if err != nil {
			d.log.Warn("cannot hear ingest's heartbeats", "subject", stream.HeartbeatSubjects, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-f.moved:
		}
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}

// heard records one heartbeat, arrived at now.
func (d *Dashboard) heard(now time.Time, data []byte) {
	var hb stream.IngestHeartbeat
	if json.Unmarshal(data, &hb) != nil || hb.Region == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.beats.last == nil {
		d.beats.last = map[string]ingestBeat{}
	}
	b := ingestBeat{hb: hb, heard: now}
	if prev, ok := d.beats.last[hb.Region]; ok {
		b.rate = prev.rate
		if dt := hb.Time.Sub(prev.hb.Time).Seconds(); dt > 0 && hb.Accepted >= prev.hb.Accepted {
			b.rate = float64(hb.Accepted-prev.hb.Accepted) / dt
		}
	}
	d.beats.last[hb.Region] = b
}

// fillIngest puts each region's ingest state and alert on its card. Called
// with d.mu held.
func (d *Dashboard) fillIngest(now time.Time, s *Snapshot) {
	for i := range s.Regions {
		r := &s.Regions[i]
		if b, ok := d.beats.last[r.Region]; ok && now.Sub(b.heard) < heardWithin {
			r.Ingest = &IngestState{Heard: b.heard.UTC(), Rate: b.rate, Accepted: b.hb.Accepted, Blocked: b.hb.Blocked, Since: b.hb.Since}
			if b.hb.Blocked != "" {
				r.Alert = b.hb.Blocked
			}
		}
		if a := d.alerts[r.Region]; a != "" && r.Alert == "" {
			r.Alert = a
		}
	}
}
