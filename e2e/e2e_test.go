package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// hostile is one payload per reason code, as an attacker or a broken device
// would send them, with the reason the pipeline must give.
func hostile(region string, now time.Time) []struct {
	reason  protocol.Reason
	topic   string
	payload []byte
} {
	valid := func(device string, ts time.Time) []byte {
		return protocol.AppendEncode(nil, protocol.Reading{Version: 1, Device: device, Boot: 7, Seq: 1, TS: ts.UnixMilli(),
			Metrics: []protocol.Metric{{Name: "temperature_c", Value: 20}}})
	}
	topic := "telemetry/" + region + "/probe/evil-1"
	return []struct {
		reason  protocol.Reason
		topic   string
		payload []byte
	}{
		{protocol.ReasonTooLarge, topic, []byte(`{"v":1,"x":"` + strings.Repeat("A", 5000) + `"}`)},
		{protocol.ReasonBadJSON, topic, []byte(`{"v":1,"device":`)},
		{protocol.ReasonBadVersion, topic, []byte(`{"v":3,"device":"evil-1"}`)},
		// Spoofing: evil-1, logged in, speaks for another device on its
		// own topic (the broker lets it publish nowhere else: no bad
		// topic gets past it, see internal/broker's tests).
		{protocol.ReasonTopicMismatch, topic, valid("someone-else", now)},
		{protocol.ReasonBadField, topic, []byte(fmt.Sprintf(`{"v":1,"device":"evil-1","boot":1.5,"seq":1,"ts":%d,"metrics":{"a":1}}`, now.UnixMilli()))},
		{protocol.ReasonBadMetric, topic, []byte(fmt.Sprintf(`{"v":1,"device":"evil-1","boot":1,"seq":1,"ts":%d,"metrics":{"a":"1e999"}}`, now.UnixMilli()))},
		{protocol.ReasonStale, topic, valid("evil-1", now.Add(-25*time.Hour))},
		{protocol.ReasonFuture, topic, valid("evil-1", now.Add(10*time.Minute))},
		// A v2 batch with one value that is not a number: the batch is
		// dead-lettered whole (docs/PROTOCOL.md).
		{protocol.ReasonBadMetric, topic, []byte(fmt.Sprintf(`{"v":2,"device":"evil-1","boot":7,"seq":1,"metrics":["a"],"readings":[[%d,1],[%d,"2"],[%d,3]]}`,
			now.UnixMilli(), now.UnixMilli(), now.UnixMilli()))},
	}
}

// TestReadingsTravelFromDevicesToClickHouseExactlyOnce runs the walking
// skeleton: simulated devices -> Mosquitto -> ingest in three regions ->
// JetStream (replicated) -> storage -> ClickHouse, plus hostile payloads to
// DEADLETTER.
func TestReadingsTravelFromDevicesToClickHouseExactlyOnce(t *testing.T) {
	// Two short, fast fleets at once, 600 readings each: 12 devices
	// speaking v1, each its own connection, and 18 devices behind 9
	// gateways (gw-, two devices of one region and type each) sending v2
	// batches of up to 10. Each device, each gateway and the attacker
	// evil-1 in each region has its line in Mosquitto's password file, and
	// each gateway its devices' topics in the ACL (telemetry mqtt passwd).
	fleetCfgs := []devices.Config{
		{Devices: 12, Rate: 300, Duration: 2 * time.Second, Seed: 42},
		{Devices: 18, Rate: 300, Duration: 2 * time.Second, Seed: 43, Batch: 10, IDPrefix: "gw-", Gateway: 2},
	}
	acl, err := devices.ACLFile(deploy.MosquittoACL, fleetCfgs...)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, fc := range fleetCfgs {
		u, err := devices.Usernames(fc)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u...)
	}
	for _, r := range stream.DefaultRegions {
		u, _ := testharness.DeviceLogin(r, "probe", "evil-1")
		users = append(users, u)
	}
	mosq := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Devices: users, ACL: acl})
	ch := testharness.ClickHouse(t)
	regions := testharness.Regions(t)
	log := slog.New(slog.DiscardHandler)

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("pipeline: %v", err)
		}
	})
	var ingests []*ingest.Ingest
	for _, r := range regions.Regions() {
		in, err := ingest.New(ingest.Config{Region: r, Broker: mosq.ServiceURL(), NATSURL: regions.URL(r)}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		ingests = append(ingests, in)
		g.Go(func() error { return in.Run(gctx) })
	}
	for _, in := range ingests {
		testharness.CheckFor(t, 15*time.Second, 20*time.Millisecond, in.Ready)
	}
	st, err := storage.New(storage.Config{NATSURL: regions.URL("us-east"), Domain: "us-east", ClickHouseAddr: ch.Addr(), Listen: storage.NoListen, FlushInterval: 200 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g.Go(func() error { return st.Run(gctx) })

	var (
		running errgroup.Group
		fleets  []*devices.Fleet
		sent    []devices.DeviceSent
	)
	for i := range fleetCfgs {
		fleetCfgs[i].Broker = mosq.URL()
		fleet, err := devices.New(fleetCfgs[i], log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fleet.Close() })
		fleets = append(fleets, fleet)
		running.Go(func() error { return fleet.Run(ctx) })
	}
	if err := running.Wait(); err != nil {
		t.Fatalf("fleet: %v", err)
	}
	for _, f := range fleets {
		sent = append(sent, f.Sent()...)
	}
	var total uint64
	for _, d := range sent {
		if d.Acked != d.LastSeq {
			t.Fatalf("device %s: broker acknowledged %d of %d readings", d.Device, d.Acked, d.LastSeq)
		}
		total += d.LastSeq
	}
	if total == 0 {
		t.Fatal("the fleet sent nothing")
	}

	// Hostile payloads, one per reason, into every region, from a device
	// evil-1 of each region that logs in with its own credential: the
	// broker's ACL lets it publish only on its own topic.
	now := time.Now()
	for _, r := range regions.Regions() {
		user, password := testharness.DeviceLogin(r, "probe", "evil-1")
		pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(mosq.URL()).SetClientID("evil-1").
			SetUsername(user).SetPassword(password))
		if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("attacker connect in %s: %v", r, tok.Error())
		}
		for _, h := range hostile(r, now) {
			if tok := pub.Publish(h.topic, 1, false, h.payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %s: %v", h.reason, tok.Error())
			}
		}
		pub.Disconnect(100)
	}

	// Every region's READINGS holds every reading, once: the v1 fleet's
	// one per message, the gateways' in batches of at most 10.
	nc := testharness.Connect(t, regions.URL("us-east"))
	for _, r := range regions.Regions() {
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		var (
			held    map[string]int
			batches int
		)
		testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			var err error
			if held, batches, err = readingsHeld(ctx, js); err != nil {
				return err
			}
			if uint64(len(held)) != total {
				return fmt.Errorf("%s READINGS holds %d distinct readings, want %d", r, len(held), total)
			}
			return nil
		})
		batched := 0
		for id, n := range held {
			if n != 1 {
				t.Errorf("%s READINGS holds %s %d times", r, id, n)
			}
			if strings.HasPrefix(id, "gw-") {
				batched++
			}
		}
		if batched == 0 || batched == len(held) {
			t.Errorf("%s READINGS holds %d readings of gateways of %d: want both fleets", r, batched, len(held))
		}
		// 600 readings of 6 gateways in batches of 10, the last of each
		// boot possibly shorter.
		if batches < batched/10 || batches >= batched/2 {
			t.Errorf("%s READINGS holds the gateways' %d readings in %d v2 messages, want about a tenth", r, batched, batches)
		}
	}

	// ClickHouse holds every reading exactly once: per device the stored
	// seqs are exactly 1..LastSeq, and FINAL counts each row once.
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		var n uint64
		if err := conn.QueryRow(ctx, `SELECT uniqExact(device, boot, seq) FROM telemetry.readings`).Scan(&n); err != nil {
			return err
		}
		if n != total {
			return fmt.Errorf("ClickHouse holds %d distinct readings, want %d", n, total)
		}
		return nil
	})
	ledger, err := storage.Ledger(ctx, conn, storage.LedgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byDevice := map[string]storage.LedgerRow{}
	for _, row := range ledger {
		byDevice[row.Device] = row
	}
	for _, d := range sent {
		row, ok := byDevice[d.Device]
		if !ok {
			t.Errorf("%s: nothing stored", d.Device)
			continue
		}
		if row.Boot != d.Boot || row.Readings != d.LastSeq || row.MinSeq != 1 || row.MaxSeq != d.LastSeq {
			t.Errorf("%s: stored %+v, want boot %d seqs 1..%d each once", d.Device, row, d.Boot, d.LastSeq)
		}
	}
	var rows, distinct uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM telemetry.readings FINAL`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT uniqExact(device, boot, seq, metric) FROM telemetry.readings`).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if rows != distinct {
		t.Errorf("count() FINAL = %d, distinct (reading, metric) = %d", rows, distinct)
	}

	// Every hostile payload is in its region's DEADLETTER with its reason.
	for _, r := range regions.Regions() {
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		cases := hostile(r, now)
		testharness.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
			if n := msgs(ctx, js, stream.DeadLetterStream); n != uint64(len(cases)) {
				return fmt.Errorf("%s DEADLETTER holds %d, want %d", r, n, len(cases))
			}
			return nil
		})
		s, err := js.Stream(ctx, stream.DeadLetterStream)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			m, err := s.GetMsg(ctx, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(protocol.HeaderReason); got != string(c.reason) {
				t.Errorf("%s: hostile payload %d dead-lettered as %q, want %q", r, i, got, c.reason)
			}
			if string(m.Data) != string(c.payload) {
				t.Errorf("%s: dead letter %d does not keep the original bytes", r, i)
			}
		}
	}
}

// readingsHeld reads READINGS through js and counts each reading it
// holds, device:boot:seq, every reading of a v2 batch on its own, and the
// v2 messages. A v2 batch longer than 10 readings is an error: the
// gateways send 10 at most.
func readingsHeld(ctx context.Context, js jetstream.JetStream) (held map[string]int, batches int, err error) {
	s, err := js.Stream(ctx, stream.ReadingsStream)
	if err != nil {
		return nil, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	held = map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return nil, 0, fmt.Errorf("READINGS message %d: %w", seq, err)
		}
		b, err := protocol.Unmarshal(m.Data)
		if err != nil {
			return nil, 0, fmt.Errorf("READINGS message %d: %w", seq, err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != b.ID() || len(b.Readings) > 10 {
			return nil, 0, fmt.Errorf("READINGS message %d: id %q of a batch of %d readings, %s", seq, id, len(b.Readings), b.ID())
		}
		if b.Version == protocol.Version2 {
			batches++
		}
		for _, r := range b.Readings {
			held[r.ID()]++
		}
	}
	return held, batches, nil
}

func msgs(ctx context.Context, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}
