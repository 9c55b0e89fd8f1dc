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
		{protocol.ReasonBadVersion, topic, []byte(`{"v":2,"device":"evil-1"}`)},
		// Spoofing: evil-1, logged in, speaks for another device on its
		// own topic (the broker lets it publish nowhere else: no bad
		// topic gets past it, see internal/broker's tests).
		{protocol.ReasonTopicMismatch, topic, valid("someone-else", now)},
		{protocol.ReasonBadField, topic, []byte(fmt.Sprintf(`{"v":1,"device":"evil-1","boot":1.5,"seq":1,"ts":%d,"metrics":{"a":1}}`, now.UnixMilli()))},
		{protocol.ReasonBadMetric, topic, []byte(fmt.Sprintf(`{"v":1,"device":"evil-1","boot":1,"seq":1,"ts":%d,"metrics":{"a":"1e999"}}`, now.UnixMilli()))},
		{protocol.ReasonStale, topic, valid("evil-1", now.Add(-25*time.Hour))},
		{protocol.ReasonFuture, topic, valid("evil-1", now.Add(10*time.Minute))},
	}
}

// TestReadingsTravelFromDevicesToClickHouseExactlyOnce runs the walking
// skeleton: simulated devices -> Mosquitto -> ingest in three regions ->
// JetStream (replicated) -> storage -> ClickHouse, plus hostile payloads to
// DEADLETTER.
func TestReadingsTravelFromDevicesToClickHouseExactlyOnce(t *testing.T) {
	// A short, fast fleet: 12 devices, 4 per region, 600 readings in all;
	// each device, and the attacker evil-1 in each region, has its line in
	// Mosquitto's password file (telemetry mqtt passwd).
	fleetCfg := devices.Config{Devices: 12, Rate: 300, Duration: 2 * time.Second, Seed: 42}
	users, err := devices.Usernames(fleetCfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stream.DefaultRegions {
		u, _ := testharness.DeviceLogin(r, "probe", "evil-1")
		users = append(users, u)
	}
	mosq := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Devices: users})
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

	fleetCfg.Broker = mosq.URL()
	fleet, err := devices.New(fleetCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fleet.Close() })
	if err := fleet.Run(ctx); err != nil {
		t.Fatalf("fleet: %v", err)
	}
	sent := fleet.Sent()
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

	// Every region's READINGS holds every reading, once.
	nc := testharness.Connect(t, regions.URL("us-east"))
	for _, r := range regions.Regions() {
		js, err := jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			if n := msgs(ctx, js, stream.ReadingsStream); n != total {
				return fmt.Errorf("%s READINGS holds %d readings, want %d", r, n, total)
			}
			return nil
		})
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
