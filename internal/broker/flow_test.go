package broker_test

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// A subscriber that falls behind (ingest, when devices publish faster than
// JetStream takes their readings) holds the devices back instead of losing
// what the broker acknowledged to them. The broker here allows 300
// messages in flight per client and an outbound queue of 400: publishers
// are held once the subscriber has 150 (half the smaller) unacknowledged.
// Without the flow hook, mochi acknowledged all 1,000 and the subscriber
// got 300.
func TestSlowSubscriberHoldsPublishersBack(t *testing.T) {
	// Plain, and shared as ingest subscribes.
	for _, filter := range []string{"telemetry/us-east/#", "$share/ingest-us-east/telemetry/us-east/#"} {
		t.Run(filter, func(t *testing.T) { slowSubscriberHoldsPublishersBack(t, filter) })
	}
}

func slowSubscriberHoldsPublishersBack(t *testing.T, filter string) {
	const (
		limit, pending = 300, 400
		highWater      = min(limit, pending) / 2
		messages       = 1000
	)
	b, err := broker.StartWithInflightLimit(broker.Config{Listen: "127.0.0.1:0", MaxPendingWrites: pending}, limit, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	// The subscriber acknowledges only what the test lets it.
	var (
		mu       sync.Mutex
		got      = map[int]int{}
		unacked  []mqtt.Message
		acking   bool
		received int
	)
	handle := func(_ mqtt.Client, m mqtt.Message) {
		n, err := strconv.Atoi(string(m.Payload()))
		if err != nil {
			t.Errorf("payload %q: %v", m.Payload(), err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got[n]++
		received++
		if acking {
			m.Ack()
			return
		}
		unacked = append(unacked, m)
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("ingest-flow-test").SetCleanSession(false).
		SetAutoReconnect(false).SetUsername(ingest.user).SetPassword(ingest.password).
		SetAutoAckDisabled(true).SetOrderMatters(false).SetDefaultPublishHandler(handle)
	sub := mqtt.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: connect: %v", tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(100) })
	if tok := sub.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: subscribe: %v", tok.Error())
	}

	pub := mustConnect(t, b.Addr(), device, "p-1", nil)
	toks := make([]mqtt.Token, messages)
	for i := range messages {
		toks[i] = pub.Publish("telemetry/us-east/probe/p-1", 1, false, strconv.Itoa(i))
	}

	// The device is held back once the subscriber has highWater messages
	// it has not acknowledged, and it stays held.
	testharness.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if b.PublishersHeld() == 0 {
			return fmt.Errorf("no publisher held back")
		}
		return nil
	})
	acked := 0
	for _, tok := range toks {
		if tok.WaitTimeout(0) {
			acked++
		}
	}
	mu.Lock()
	held := received
	mu.Unlock()
	if held != highWater {
		t.Errorf("the subscriber holds %d unacknowledged messages while publishers are held, want %d", held, highWater)
	}
	if acked > highWater {
		t.Errorf("the broker acknowledged %d publishes while its subscriber holds %d, want at most %d", acked, held, highWater)
	}

	// The subscriber catches up: every message arrives once, every
	// publish is acknowledged, and none was dropped.
	mu.Lock()
	acking = true
	for _, m := range unacked {
		m.Ack()
	}
	unacked = nil
	mu.Unlock()
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
	}
	testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < messages {
			return fmt.Errorf("the subscriber got %d of %d messages", len(got), messages)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for n, c := range got {
		if c != 1 {
			t.Errorf("message %d delivered %d times", n, c)
		}
	}
	if d := b.InflightDropped(); d != 0 {
		t.Errorf("the broker dropped %d messages", d)
	}
}
