package storage_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/storage"
)

// publishBatch stores readings as one v2 message in READINGS, as ingest
// does: the payload as the device sent it, the batch's id.
func (e *env) publishBatch(t *testing.T, rs []protocol.Reading) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := protocol.AppendEncodeBatch(nil, rs)
	b, err := protocol.Unmarshal(body)
	if err != nil {
		t.Fatalf("the test's batch does not decode: %v", err)
	}
	msg := nats.NewMsg("telemetry." + region + ".th." + b.Device)
	msg.Data = body
	msg.Header.Set(protocol.HeaderReceived, strconv.FormatInt(time.Now().UnixMilli(), 10))
	msg.Header.Set(jetstream.MsgIDHeader, b.ID())
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publishing %s: %v", b.ID(), err)
	}
}

// v1 readings and v2 batches in one stream are each stored once per
// reading: a batch sent again with other boundaries (another message id,
// so JetStream keeps both) adds no reading to the ledger, and a batch that
// cannot be stored is skipped whole.
func TestStoresBatchesBesideReadings(t *testing.T) {
	e := newEnv(t)
	single := readings(2, 30, 2000) // th-000 and th-001, v1
	e.publish(t, single, true)

	batched := readings(3, 300, 3000)[600:] // th-002, seq 1..300
	for _, r := range [][2]int{{0, 100}, {50, 150}, {150, 290}, {290, 300}} {
		e.publishBatch(t, batched[r[0]:r[1]])
	}
	// ts before 1970 decodes, and no DateTime holds it: the batch is
	// skipped whole and counted once.
	bad := readings(1, 5, 4000)
	bad[2].TS = -1
	e.publishBatch(t, bad)

	w := start(t, e.config())
	readingsWanted := len(single) + len(batched)
	e.waitStored(t, w, uint64(readingsWanted*len(metricNames)))

	base := "http://" + w.Addr()
	var st storage.Status
	if code := getJSON(t, base+"/api/status", &st); code != http.StatusOK {
		t.Fatalf("/api/status answered %d", code)
	}
	if st.DecodeErrors != 1 {
		t.Errorf("decode errors %d, want 1: the batch with a ts no DateTime holds", st.DecodeErrors)
	}
	var ledger struct{ Ledger []storage.LedgerRow }
	if code := getJSON(t, base+"/api/ledger", &ledger); code != http.StatusOK {
		t.Fatalf("/api/ledger answered %d", code)
	}
	want := []storage.LedgerRow{
		{Region: region, Device: "th-000", Boot: 2000, Readings: 30, MinSeq: 1, MaxSeq: 30},
		{Region: region, Device: "th-001", Boot: 2000, Readings: 30, MinSeq: 1, MaxSeq: 30},
		{Region: region, Device: "th-002", Boot: 3000, Readings: 300, MinSeq: 1, MaxSeq: 300},
	}
	if fmt.Sprint(ledger.Ledger) != fmt.Sprint(want) {
		t.Errorf("ledger %+v, want %+v", ledger.Ledger, want)
	}
	// Every row of a batch is its own reading's: seq, ts and values.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seq uint64
	var tsMS uint64
	var value float64
	if err := e.conn.QueryRow(ctx, "SELECT seq, ts_ms, value FROM telemetry.readings FINAL WHERE device = 'th-002' AND seq = 217 AND metric = 'humidity_pct'").Scan(&seq, &tsMS, &value); err != nil {
		t.Fatal(err)
	}
	r := batched[216]
	if seq != r.Seq || tsMS != uint64(r.TS) || value != r.Metrics[1].Value {
		t.Errorf("row of th-002 seq 217: seq %d ts_ms %d value %v, want %d %d %v", seq, tsMS, value, r.Seq, r.TS, r.Metrics[1].Value)
	}
}
