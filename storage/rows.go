package storage

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// insertColumns is the explicit column list of every insert: 18.16 needs
// one, and stored_at takes its default. stored_ms is last: insert stamps
// it after appending the others.
const insertColumns = "(region, device_type, device, boot, seq, metric, value, ts, ts_ms, received_ms, stored_ms)"

// columns is a batch of rows in columnar form, as the native protocol sends
// them. It is reused from batch to batch.
type columns struct {
	region, deviceType, device, metric []string
	boot, seq, tsMS, receivedMS        []uint64
	value                              []float64
	ts                                 []time.Time
	storedMS                           []uint64 // filled by insert, just before sending
	readings                           int
}

func (c *columns) reset() {
	c.region, c.deviceType, c.device, c.metric = c.region[:0], c.deviceType[:0], c.device[:0], c.metric[:0]
	c.boot, c.seq, c.tsMS, c.receivedMS = c.boot[:0], c.seq[:0], c.tsMS[:0], c.receivedMS[:0]
	c.value, c.ts, c.storedMS = c.value[:0], c.ts[:0], c.storedMS[:0]
	c.readings = 0
}

func (c *columns) rows() int { return len(c.metric) }

// maxTSMillis is the last millisecond a DateTime (unsigned 32-bit seconds)
// can hold.
const maxTSMillis = math.MaxUint32*1000 + 999

// reading is one decoded message: a reading and where it came from.
type reading struct {
	key                readingKey
	region, deviceType string
	r                  protocol.Reading
	received           uint64 // unix ms when ingest took it from MQTT; 0 if unknown
	// check means the reading may be stored already: JetStream delivered
	// it before, or an insert that held it failed (and may have landed
	// nonetheless). It is looked up before it is inserted.
	check bool
}

// readingKey identifies a reading (protocol: device, boot, seq).
type readingKey struct {
	device    string
	boot, seq uint64
}

// decode turns one JetStream message, subject
// telemetry.<region>.<device-type>.<device-id> and body a v1 reading or a
// v2 batch, into its readings, appended to dst. An error means the message
// can never be stored, and nothing is appended: a batch is stored whole
// or not at all, as ingest accepts it.
func decode(dst []reading, subject string, body []byte, h nats.Header) ([]reading, error) {
	topic, err := protocol.ParseSubject(subject)
	if err != nil {
		return dst, err
	}
	region, deviceType, device := topic.Region, topic.DeviceType, topic.Device
	b, err := protocol.Unmarshal(body)
	if err != nil {
		return dst, fmt.Errorf("decoding body: %w", err)
	}
	if b.Device != device {
		return dst, fmt.Errorf("body's device %q is not the subject's %q", b.Device, device)
	}
	for _, r := range b.Readings {
		if r.TS < 0 || r.TS > maxTSMillis {
			return dst, fmt.Errorf("seq %d: ts %d is outside what a DateTime holds", r.Seq, r.TS)
		}
	}
	var received uint64
	if v := h.Get(protocol.HeaderReceived); v != "" {
		received, _ = strconv.ParseUint(v, 10, 64) // informational: 0 if garbled
	}
	for _, r := range b.Readings {
		dst = append(dst, reading{
			key:    readingKey{device: device, boot: r.Boot, seq: r.Seq},
			region: region, deviceType: deviceType,
			r: r, received: received,
		})
	}
	return dst, nil
}

// add decodes one message and appends a row per metric of each of its
// readings; nothing is appended when it cannot be decoded.
func (c *columns) add(subject string, body []byte, h nats.Header) error {
	rds, err := decode(nil, subject, body, h)
	if err != nil {
		return err
	}
	for i := range rds {
		c.append(&rds[i])
	}
	return nil
}

// append adds a row per metric of rd.
func (c *columns) append(rd *reading) {
	ts := time.Unix(rd.r.TS/1000, 0).UTC()
	for _, m := range rd.r.Metrics {
		c.region = append(c.region, rd.region)
		c.deviceType = append(c.deviceType, rd.deviceType)
		c.device = append(c.device, rd.key.device)
		c.boot = append(c.boot, rd.key.boot)
		c.seq = append(c.seq, rd.key.seq)
		c.metric = append(c.metric, m.Name)
		c.value = append(c.value, m.Value)
		c.ts = append(c.ts, ts)
		c.tsMS = append(c.tsMS, uint64(rd.r.TS))
		c.receivedMS = append(c.receivedMS, rd.received)
	}
	c.readings++
}

// insert sends the rows in one INSERT into database.readings, each with
// stored_ms the writer's clock as they leave.
func (c *columns) insert(ctx context.Context, conn driver.Conn, database string) error {
	return c.insertInto(ctx, conn, database+".readings")
}

// insertInto is insert into table (database.table).
func (c *columns) insertInto(ctx context.Context, conn driver.Conn, table string) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" "+insertColumns)
	if err != nil {
		return fmt.Errorf("preparing insert: %w", err)
	}
	defer b.Close()
	cols := []any{c.region, c.deviceType, c.device, c.boot, c.seq, c.metric, c.value, c.ts, c.tsMS, c.receivedMS}
	for i, col := range cols {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("appending column %d: %w", i, err)
		}
	}
	// stored_ms is taken here, as the rows leave for the server (Send
	// writes them; PrepareBatch only sent the query): the latest time that
	// can still travel in the rows. It counts the wait for a batch, the
	// lookup of copies and any failed attempts, which all delay a reading,
	// but not the insert itself, which telemetry_storage_insert_seconds
	// bounds. The server's clock would include that, but 18.16 has only
	// now(), to the second (stored_at); no now64.
	stamp := uint64(time.Now().UnixMilli())
	c.storedMS = c.storedMS[:0]
	for range c.rows() {
		c.storedMS = append(c.storedMS, stamp)
	}
	if err := b.Column(len(cols)).Append(c.storedMS); err != nil {
		return fmt.Errorf("appending column %d: %w", len(cols), err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("sending %d rows: %w", c.rows(), err)
	}
	return nil
}
