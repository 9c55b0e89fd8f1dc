package join

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// TracerConfig says where a StreamTracer reads.
type TracerConfig struct {
	// Regions are the regions, in order, and NATS each one's URL as a
	// user that may read READINGS (the dashboard's).
	Regions []string
	NATS    map[string]string
	// ClickHouse dials ClickHouse as a read-only user (the history's);
	// until it succeeds the stored hop is left open.
	ClickHouse func() (driver.Conn, error)
}

// StreamTracer finds a phone's latest reading in the pipeline (Tracer): in
// its region's READINGS, in each other region's copy, and in ClickHouse,
// with the time each stored it. It dials NATS and ClickHouse on first use.
type StreamTracer struct {
	cfg TracerConfig

	mu      sync.Mutex
	streams map[string]jetstream.Stream // each region's READINGS
	ncs     []*nats.Conn
	conn    driver.Conn
}

// NewTracer is the tracer of the readings where cfg says.
func NewTracer(cfg TracerConfig) *StreamTracer { return &StreamTracer{cfg: cfg} }

// Trace implements Tracer.
func (tr *StreamTracer) Trace(ctx context.Context, t protocol.Topic) (Journey, error) {
	js, err := tr.readings(ctx)
	if err != nil {
		return Journey{}, err
	}
	home, ok := js[t.Region]
	if !ok {
		return Journey{}, fmt.Errorf("no region %s", t.Region)
	}
	subject := t.Subject()
	last, err := lastReading(ctx, home, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Journey{}, ErrNoReading
	}
	if err != nil {
		return Journey{}, fmt.Errorf("%s's READINGS: %w", t.Region, err)
	}
	j := Journey{Device: t.Device, Boot: last.boot, Seq: last.seq,
		Hops: []Hop{{Name: "JetStream " + t.Region, At: &last.at}}}
	for _, r := range tr.cfg.Regions {
		if r == t.Region {
			continue
		}
		hop := Hop{Name: "copy in " + r}
		// The copy of this very reading, or a later one (then this one's
		// time is not kept apart: a later reading's copy is there).
		if c, err := lastReading(ctx, js[r], subject); err == nil && c.boot == last.boot && c.seq >= last.seq {
			at := c.at
			hop.At = &at
		}
		j.Hops = append(j.Hops, hop)
	}
	stored := Hop{Name: "stored in ClickHouse"}
	if conn, err := tr.clickhouse(); err == nil {
		var ms uint64
		if err := conn.QueryRow(ctx, `SELECT max(stored_ms) FROM telemetry.readings WHERE device = ? AND boot = ? AND seq = ?`,
			t.Device, last.boot, last.seq).Scan(&ms); err == nil && ms > 0 {
			at := time.UnixMilli(int64(ms)).UTC()
			stored.At = &at
		}
	}
	j.Hops = append(j.Hops, stored)
	return j, nil
}

type reading struct {
	boot, seq uint64
	at        time.Time
}

// lastReading is the last reading on subject in READINGS s and when the
// stream stored it.
func lastReading(ctx context.Context, s jetstream.Stream, subject string) (reading, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return reading{}, err
	}
	b, err := protocol.Unmarshal(m.Data)
	if err != nil || len(b.Readings) == 0 {
		return reading{}, fmt.Errorf("the last message on %s does not decode: %v", subject, err)
	}
	return reading{boot: b.Boot, seq: b.Readings[len(b.Readings)-1].Seq, at: m.Time.UTC()}, nil
}

// readings returns every region's READINGS, looked up once.
func (tr *StreamTracer) readings(ctx context.Context) (map[string]jetstream.Stream, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.streams != nil {
		return tr.streams, nil
	}
	streams := map[string]jetstream.Stream{}
	for _, r := range tr.cfg.Regions {
		nc, err := nats.Connect(tr.cfg.NATS[r], nats.Name("telemetry-journey"), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", r, err)
		}
		tr.ncs = append(tr.ncs, nc)
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			return nil, err
		}
		if streams[r], err = js.Stream(ctx, stream.ReadingsStream); err != nil {
			return nil, fmt.Errorf("%s's READINGS: %w", r, err)
		}
	}
	tr.streams = streams
	return streams, nil
}

func (tr *StreamTracer) clickhouse() (driver.Conn, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.conn != nil {
		return tr.conn, nil
	}
	if tr.cfg.ClickHouse == nil {
		return nil, errors.New("no ClickHouse to read from")
	}
	conn, err := tr.cfg.ClickHouse()
	if err != nil {
		return nil, err
	}
	tr.conn = conn
	return conn, nil
}

// Close closes the tracer's connections.
func (tr *StreamTracer) Close() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, nc := range tr.ncs {
		nc.Close()
	}
	if tr.conn != nil {
		tr.conn.Close()
	}
}
