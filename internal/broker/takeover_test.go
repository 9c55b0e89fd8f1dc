package broker_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// A persistent session resumed again and again (ingest restarting after
// crashes) while a device publishes fast must still get every message the
// broker acknowledged to the device. mochi alone loses the messages routed
// to the old session during a takeover; the broker's takeover hook hands
// them over.
func TestResumedSessionGetsEveryAcknowledgedMessage(t *testing.T) {
	addr := startEmbedded(t)
	const (
		messages = 20000
		clientID = "ingest-takeover-test"
		filter   = "$share/ingest-us-east/telemetry/us-east/#"
		// maxTakeovers bounds the takeovers, in case publishing is slow.
		maxTakeovers = 2000
	)

	var (
		mu  sync.Mutex
		got = make(map[int]bool, messages)
	)
	handle := func(_ mqtt.Client, m mqtt.Message) {
		n, err := strconv.Atoi(string(m.Payload()))
		if err != nil {
			t.Errorf("payload %q: %v", m.Payload(), err)
			return
		}
		mu.Lock()
		got[n] = true
		mu.Unlock()
	}
	// Each subscriber takes the session over from the one before it; the
	// broker disconnects the old one.
	subscribe := func() mqtt.Client {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetCleanSession(false).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
			SetUsername(ingest.user).SetPassword(ingest.password).SetDefaultPublishHandler(handle)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscriber: connect: %v", tok.Error())
		}
		if tok := c.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscriber: subscribe: %v", tok.Error())
		}
		return c
	}
	sub := subscribe()

	pub := mustConnect(t, addr, deviceLogin("probe", "p-1"), "p-1", nil)
	published := make(chan error, 1)
	go func() {
		var toks []mqtt.Token
		for i := range messages {
			toks = append(toks, pub.Publish("telemetry/us-east/probe/p-1", 1, false, strconv.Itoa(i)))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				published <- fmt.Errorf("publish not acknowledged: %v", tok.Error())
				return
			}
		}
		published <- nil
	}()

	// Take the session over again and again while the device publishes.
	n := 0
	for done := false; !done; {
		select {
		case err := <-published:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
			if n < maxTakeovers {
				sub = subscribe()
				n++
			}
		}
	}
	defer sub.Disconnect(0)
	t.Logf("session taken over %d times while %d messages were published", n, messages)
	// A run took 166 to 615 takeovers on two loaded cores; without a few
	// dozen the test says nothing about them.
	if n < 20 {
		t.Fatalf("only %d takeovers while %d messages were published: too few to tell", n, messages)
	}

	testharness.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < messages {
			var missing []int
			for i := 0; i < messages && len(missing) < 10; i++ {
				if !got[i] {
					missing = append(missing, i)
				}
			}
			return fmt.Errorf("received %d of %d acknowledged messages; missing include %v", len(got), messages, missing)
		}
		return nil
	})
}
