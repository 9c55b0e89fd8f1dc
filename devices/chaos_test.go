package devices

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/poll"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// TestChaosCasesGetTheirReason is the contract of every hostile message:
// protocol.Decode, which ingest runs, rejects it with the reason it is
// tagged with, and its marker can be found in the payload as sent.
func TestChaosCasesGetTheirReason(t *testing.T) {
	now := time.Now()
	d := newDeviceWith("bench-", 41, "eu-west", TypeThermostat, 1764100000123456789, 1)
	f := &Fleet{cfg: Config{Seed: 1, Boot: 1764100000123456789}.withDefaults()}
	reasons := map[protocol.Reason]bool{}
	names := map[string]bool{}
	acl, err := broker.ParseACL(deploy.MosquittoACL)
	if err != nil {
		t.Fatal(err)
	}
	for k, c := range ChaosCases() {
		t.Run(c.Name, func(t *testing.T) {
			if names[c.Name] {
				t.Errorf("case name %s used twice", c.Name)
			}
			names[c.Name] = true
			reasons[c.Reason] = true
			want := ChaosMarker{Run: f.cfg.Boot, Device: d.index, N: 17, Case: k}
			in := &chaosInput{
				marker: want.String(), region: d.region, typ: d.typ, device: d.id,
				boot: d.cur.boot, seq: 1<<53 + 17, nowMS: now.UnixMilli(), topic: d.topic,
			}
			if !protocol.ValidMetricName(in.marker) {
				t.Fatalf("marker %q is not a valid metric name", in.marker)
			}
			topic, payload := c.gen(nil, in)
			_, _, err := protocol.Decode(topic, payload, now, protocol.Limits{})
			var rej *protocol.Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("Decode(%q, %.200q) = %v, want a rejection %s", topic, payload, err, c.Reason)
			}
			if rej.Reason != c.Reason {
				t.Errorf("Decode(%q, %.200q) rejected it as %s (%s), want %s", topic, payload, rej.Reason, rej.Detail, c.Reason)
			}
			got, ok := FindChaosMarker(payload)
			if !ok || got != want {
				t.Errorf("marker in %.200q = %+v, %v; want %+v", payload, got, ok, want)
			}
			if !strings.HasPrefix(topic, "telemetry/"+d.region+"/") {
				t.Errorf("topic %q is outside the region's tree: its ingest would not see it", topic)
			}
			if !acl.Allowed(d.id, d.user, topic, true) {
				t.Errorf("topic %q: the broker's ACL does not let device %s publish there, so ingest would never see it", topic, d.id)
			}
		})
	}
	for _, r := range ChaosReasons() {
		if !reasons[r] {
			t.Errorf("no hostile message for reason %s", r)
		}
	}
}

func TestFindChaosMarker(t *testing.T) {
	m := ChaosMarker{Run: 99, Device: 3, N: 12, Case: 4}
	tests := []struct {
		name    string
		payload string
		ok      bool
	}{
		{"in a metric", `{"metrics":{"` + m.String() + `":1}}`, true},
		{"at the end", `x ` + m.String(), true},
		{"none", `{"v":1}`, false},
		{"cut short", `chaos_99_3_12`, false},
		{"case out of range", `chaos_99_3_12_9999`, false},
		{"overflow", `chaos_99999999999999999999999_3_12_4`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FindChaosMarker([]byte(tt.payload))
			if ok != tt.ok || ok && got != m {
				t.Errorf("FindChaosMarker(%q) = %+v, %v; want ok %v", tt.payload, got, ok, tt.ok)
			}
		})
	}
}

// TestChaosCaseSpreadsOverEveryCase: a fleet draws every case it may
// send, a v1 fleet v1's alone.
func TestChaosCaseSpreadsOverEveryCase(t *testing.T) {
	for _, batch := range []int{0, 1, 2, protocol.MaxBatchReadings} {
		seen := make([]int, len(chaosCases))
		for dev := range 10 {
			for n := uint64(1); n <= 300; n++ {
				seen[chaosCaseOf(7, dev, n, chaosCount(batch))]++
			}
		}
		for k, c := range seen {
			if sends := batch > 1 || chaosCases[k].Version == protocol.Version1; sends != (c > 0) {
				t.Errorf("batch %d: case %s (v%d) chosen %d times in 3000 messages", batch, chaosCases[k].Name, chaosCases[k].Version, c)
			}
		}
	}
}

// rawCollector keeps every message the broker delivers.
type rawCollector struct {
	mu   sync.Mutex
	msgs []rawMsg
}

type rawMsg struct {
	topic   string
	payload []byte
}

func subscribeRaw(t *testing.T, broker string) *rawCollector {
	t.Helper()
	c := &rawCollector{}
	client := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("raw-collector").SetCleanSession(true).
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword))
	if tok := client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connecting: %v", tok.Error())
	}
	t.Cleanup(func() { client.Disconnect(100) })
	tok := client.Subscribe("telemetry/#", 1, func(_ paho.Client, m paho.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, rawMsg{m.Topic(), bytes.Clone(m.Payload())})
		c.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribing: %v", tok.Error())
	}
	return c
}

func (c *rawCollector) snapshot() []rawMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rawMsg(nil), c.msgs...)
}

// TestFleetBehavioursAndChaos runs a fleet with every behaviour and chaos
// on, speaking v1 and v2 (batches of 5), and checks from what the broker
// delivered that each happened and that Sent and Hostile account for
// everything.
func TestFleetBehavioursAndChaos(t *testing.T) {
	for _, tt := range []struct {
		name    string
		batch   int
		version int
		// hostile messages of 800 reading slots: chaos 0.2 of messages,
		// which with batches of 5 is about 0.2 / 4.2 of the slots.
		minHostile, maxHostile uint64
	}{
		{"v1", 1, protocol.Version1, 100, 230},
		{"v2 batches of 5", 5, protocol.Version2, 15, 80},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testBehavioursAndChaos(t, tt.batch, tt.version, tt.minHostile, tt.maxHostile)
		})
	}
}

func testBehavioursAndChaos(t *testing.T, batch, version int, minHostile, maxHostile uint64) {
	broker := startBroker(t)
	c := subscribeRaw(t, broker)
	cfg := Config{
		Broker: broker, Devices: 6, Rate: 400, Duration: 2 * time.Second, Seed: 3,
		IDPrefix: "bench-", Reboots: 0.02, Duplicates: 0.05, Reorder: 0.05,
		ClockSkew: time.Minute, Chaos: 0.2, Boot: 1764100000,
		// Batches close when full, on a reboot and at the end only, so
		// that the behaviours drawn do not depend on timing.
		Batch: batch, BatchWait: MaxBatchWait,
	}
	f := runFleet(t, cfg)
	s := f.Stats()
	// Due readings beyond a device's backlog are skipped, should the
	// machine stall the run: counted, and never given a seq.
	if s.Sent+s.Hostile+s.Skipped != 800 || s.Acked != s.Sent || s.HostileAcked != s.Hostile || s.Batched != 0 {
		t.Fatalf("stats %+v: want 800 readings, hostile messages and skipped, all sent acknowledged, none left in a batch", s)
	}
	if s.Hostile < minHostile || s.Hostile > maxHostile {
		t.Errorf("%d hostile of 800, want %d to %d (chaos 0.2 of messages)", s.Hostile, minHostile, maxHostile)
	}
	if share := float64(s.Hostile) / float64(s.Hostile+s.Messages); share < 0.12 || share > 0.28 {
		t.Errorf("%d hostile messages and %d of readings: a share of %.2f, want about 0.2", s.Hostile, s.Messages, share)
	}
	if s.Reboots == 0 || s.Duplicates == 0 || s.Reordered == 0 {
		t.Errorf("stats %+v: want reboots, duplicates and reordered pairs", s)
	}
	casesOf := map[int]int{} // protocol version -> hostile messages built from it
	for _, h := range f.Hostile() {
		for n := uint64(1); n <= h.Sent; n++ {
			casesOf[chaosCases[f.ChaosCase(h.Index, n)].Version]++
		}
	}
	if casesOf[protocol.Version1] == 0 || (version == protocol.Version2) != (casesOf[protocol.Version2] > 0) {
		t.Errorf("hostile messages by the version they break: %v; want v1's, and v2's only from a fleet of batches", casesOf)
	}

	type key struct {
		dev       string
		boot, seq uint64
	}
	want := map[key]bool{}
	for _, ds := range f.Sent() {
		if !strings.HasPrefix(ds.Device, "bench-") {
			t.Errorf("device %s lacks the id prefix", ds.Device)
		}
		for seq := ds.FirstSeq; seq >= 1 && seq <= ds.LastSeq; seq++ {
			want[key{ds.Device, ds.Boot, seq}] = true
		}
	}
	wantHostile := map[ChaosMarker]bool{}
	for _, h := range f.Hostile() {
		for n := uint64(1); n <= h.Sent; n++ {
			wantHostile[ChaosMarker{Run: cfg.Boot, Device: h.Index, N: n, Case: f.ChaosCase(h.Index, n)}] = true
		}
	}
	var got map[key]int
	var gotHostile map[ChaosMarker]bool
	var problems []string
	var outOfOrder int
	skews := map[string]int64{}
	check := func() bool {
		got, gotHostile, problems, outOfOrder = map[key]int{}, map[ChaosMarker]bool{}, nil, 0
		last := map[string]key{}
		for _, m := range c.snapshot() {
			_, b, err := protocol.Decode(m.topic, m.payload, time.Now(), protocol.Limits{})
			if err != nil {
				mk, ok := FindChaosMarker(m.payload)
				if !ok || !wantHostile[mk] {
					problems = append(problems, fmt.Sprintf("rejected message without a known marker: %v", err))
				} else if want := chaosCases[mk.Case].Reason; !strings.HasPrefix(err.Error(), string(want)) {
					problems = append(problems, fmt.Sprintf("case %s: %v", chaosCases[mk.Case].Name, err))
				}
				gotHostile[mk] = true
				continue
			}
			if b.Version != version {
				problems = append(problems, fmt.Sprintf("%s: protocol v%d, want v%d", m.payload, b.Version, version))
			}
			for _, r := range b.Readings {
				k := key{r.Device, r.Boot, r.Seq}
				got[k]++
				if p, ok := last[r.Device]; ok && p.boot == r.Boot && r.Seq < p.seq {
					outOfOrder++
				}
				last[r.Device] = k
				skews[r.Device] = r.TS - time.Now().UnixMilli()
			}
		}
		return len(got) >= len(want) && len(gotHostile) >= len(wantHostile)
	}
	_ = poll.Until(30*time.Second, 50*time.Millisecond, func() error { // what is missing then is reported below
		if !check() {
			return errors.New("not everything sent has arrived")
		}
		return nil
	})
	for k := range want {
		if got[k] == 0 {
			problems = append(problems, fmt.Sprintf("reading %v sent, not delivered", k))
		}
	}
	for k := range got {
		if !want[k] {
			problems = append(problems, fmt.Sprintf("reading %v delivered, not sent", k))
		}
	}
	for mk := range wantHostile {
		if !gotHostile[mk] {
			problems = append(problems, fmt.Sprintf("hostile %+v sent, not delivered", mk))
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d problems, e.g. %q", len(problems), problems[:min(5, len(problems))])
	}
	var dups int
	for _, n := range got {
		if n > 1 {
			dups++
		}
	}
	if dups == 0 || outOfOrder == 0 {
		t.Errorf("%d readings delivered twice, %d out of order: want some of each", dups, outOfOrder)
	}
	var skewed int
	for _, s := range skews {
		if s < -5000 || s > 5000 {
			skewed++
		}
	}
	if skewed == 0 {
		t.Errorf("no device's clock is off by more than 5s (skews %v)", skews)
	}
}
