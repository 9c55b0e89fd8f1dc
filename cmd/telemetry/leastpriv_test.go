package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestNineAttacksOnTheDemo is the black-box check of issue 22: against
// `telemetry demo` with its documented demo credentials, the nine attacks
// a tester tried by hand are each refused, the documented users still do
// their jobs, and storage's ledger misses nothing.
func TestNineAttacksOnTheDemo(t *testing.T) {
	testharness.RequireClickHouse(t)
	out := startDemo(t, "")
	url := consoleValue(t, out, dashboardLine)
	waitAllRegionsMoving(t, url)
	mqttAddr := consoleValue(t, out, regexp.MustCompile(`MQTT broker\s+tcp://(\S+)`))
	natsAddr := map[string]string{}
	for _, r := range stream.DefaultRegions {
		natsAddr[r] = consoleValue(t, out, regexp.MustCompile(`NATS region `+r+`\s+nats://\S+@(\S+)`))
	}
	ledgerURL := "http://" + consoleValue(t, out, regexp.MustCompile(`status at http://(\S+)/api/status`)) + "/api/ledger"
	before := ledgerNow(t, ledgerURL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("1 dashboard pulls from storage's consumer", func(t *testing.T) {
		c := natsAs(t, natsAddr["us-east"], "dashboard", "dashboard")
		js, _ := jetstream.NewWithDomain(c.nc, "us-east")
		theirs, err := js.Consumer(ctx, stream.ReadingsStream, stream.StorageConsumer)
		if err != nil {
			t.Fatalf("dashboard reading storage's consumer state (its own job, for the page): %v", err)
		}
		if msgs, err := theirs.Fetch(10, jetstream.FetchMaxWait(time.Second)); err == nil {
			for m := range msgs.Messages() {
				t.Fatalf("the dashboard pulled %s from storage's consumer", m.Subject())
			}
		}
		c.violation(t, "$JS.API.CONSUMER.MSG.NEXT.READINGS.storage")
	})

	t.Run("2 storage deletes another consumer", func(t *testing.T) {
		admin := natsAs(t, natsAddr["us-east"], stream.DemoUser, stream.DemoPassword)
		ajs, _ := jetstream.NewWithDomain(admin.nc, "us-east")
		if _, err := ajs.CreateOrUpdateConsumer(ctx, stream.ReadingsStream, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		defer ajs.DeleteConsumer(ctx, stream.ReadingsStream, "audit")
		c := natsAs(t, natsAddr["us-east"], "storage", "storage")
		js, _ := jetstream.NewWithDomain(c.nc, "us-east")
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		if err := js.DeleteConsumer(dctx, stream.ReadingsStream, "audit"); err == nil {
			t.Fatal("storage deleted another consumer")
		}
		c.violation(t, "$JS.API.CONSUMER.DELETE.READINGS.audit")
		if _, err := ajs.Consumer(ctx, stream.ReadingsStream, "audit"); err != nil {
			t.Fatalf("the other consumer after storage's attempt: %v", err)
		}
	})

	for _, c := range []struct{ name, user, password string }{
		{"3 leaf logs in on the client port", "leaf", "leaf"},
		{"4 sys logs in on the client port", "sys", "sys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, err := nats.Connect("nats://" + c.user + ":" + c.password + "@" + natsAddr["us-east"])
			if err == nil {
				nc.Close()
				t.Fatalf("%s logged in", c.user)
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Errorf("%s: %v, want an authorization violation", c.user, err)
			}
		})
	}

	// MQTT: each attacker logs in and publishes one reading where it must
	// not. The embedded broker answers a denied QoS 1 publish by closing
	// the connection; the reading is nowhere in JetStream afterwards,
	// checked once every region's stream has moved on by a second of
	// readings.
	th1User, th1Password := testharness.DeviceLogin("us-east", "thermostat", "th-00001")
	mqttAttacks := []struct {
		name, user, password, clientID, topic string
	}{
		{"5 health publishes a reading", deploy.MQTTHealthUser, deploy.MQTTHealthPassword, "zz-77777", "telemetry/us-east/probe/zz-77777"},
		{"6 ingest publishes a reading", deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword, "zz-77778", "telemetry/us-east/probe/zz-77778"},
		{"7 a us-east device publishes in eu-west", th1User, th1Password, "th-00001", "telemetry/eu-west/thermostat/th-00001"},
		{"forger without the fleet secret", th1User, "0123456789abcdef0123456789abcdef", "th-00001", "telemetry/us-east/thermostat/th-00001"},
		{"the old shared fleet user", "device", "device", "th-00001", "telemetry/us-east/thermostat/th-00001"},
	}
	admin := natsAs(t, natsAddr["us-east"], stream.DemoUser, stream.DemoPassword)
	lastSeq := func(region string) uint64 {
		js, _ := jetstream.NewWithDomain(admin.nc, region)
		s, err := js.Stream(ctx, stream.ReadingsStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	forged := fmt.Sprintf(`{"v":1,"device":"%%s","boot":1,"seq":999999,"ts":%d,"metrics":{"temperature_c":99.9}}`, time.Now().UnixMilli())
	for _, a := range mqttAttacks {
		t.Run(a.name, func(t *testing.T) {
			cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID(a.clientID).
				SetUsername(a.user).SetPassword(a.password).SetAutoReconnect(false).SetConnectRetry(false))
			tok := cl.Connect()
			if !tok.WaitTimeout(10 * time.Second) {
				t.Fatal("no CONNACK")
			}
			if tok.Error() != nil {
				return // refused at login: the forger's and the old user's case
			}
			if strings.HasPrefix(a.name, "forger") || strings.HasPrefix(a.name, "the old") {
				t.Fatalf("%s logged in", a.user)
			}
			defer cl.Disconnect(50)
			id := a.topic[strings.LastIndexByte(a.topic, '/')+1:]
			ptok := cl.Publish(a.topic, 1, false, fmt.Sprintf(forged, id))
			if ptok.WaitTimeout(10*time.Second) && ptok.Error() == nil && cl.IsConnectionOpen() {
				t.Errorf("the broker acknowledged %s's publish on %s and kept the connection", a.user, a.topic)
			}
			region := strings.Split(a.topic, "/")[1]
			subject := strings.ReplaceAll(a.topic, "/", ".")
			seq := lastSeq(region)
			testharness.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
				if n := lastSeq(region); n < seq+50 {
					return fmt.Errorf("%s's READINGS at seq %d, want past %d", region, n, seq+50)
				}
				return nil
			})
			js, _ := jetstream.NewWithDomain(admin.nc, region)
			s, _ := js.Stream(ctx, stream.ReadingsStream)
			if m, err := s.GetLastMsgForSubject(ctx, subject); err == nil && strings.Contains(string(m.Data), "99.9") {
				t.Errorf("the forged reading reached %s's READINGS: %s", region, m.Data)
			}
		})
	}

	t.Run("a reading under a used identity counts as its device's duplicate", func(t *testing.T) {
		// The forger is refused above; were a device's own credential
		// stolen, a reading sent under an identity already stored
		// (device, boot, seq) is suppressed by JetStream and counted on
		// its device. A device of its own, th-90001, so as not to take
		// the fleet's th-00001's session.
		user, password := testharness.DeviceLogin("us-east", "thermostat", "th-90001")
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("th-90001").
			SetUsername(user).SetPassword(password).SetAutoReconnect(false).SetConnectRetry(false))
		if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("th-90001 with its own credential: %v", tok.Error())
		}
		defer cl.Disconnect(50)
		series := regexp.MustCompile(`telemetry_ingest_duplicates_by_device_total\{device="th-90001",region="us-east"\} (\d+)`)
		counted := func() (int, error) {
			resp, err := http.Get(url + "/metrics")
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			n := 0
			if m := series.FindSubmatch(b); m != nil {
				n, _ = strconv.Atoi(string(m[1]))
			}
			return n, nil
		}
		reading := func(celsius float64) string {
			return fmt.Sprintf(`{"v":1,"device":"th-90001","boot":7,"seq":1,"ts":%d,"metrics":{"temperature_c":%g}}`, time.Now().UnixMilli(), celsius)
		}
		for i, r := range []string{reading(21.5), reading(99.9)} {
			if tok := cl.Publish("telemetry/us-east/thermostat/th-90001", 1, false, r); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publishing reading %d: %v", i, tok.Error())
			}
		}
		testharness.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			n, err := counted()
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("th-90001's duplicates on /metrics: %d, want 1", n)
			}
			return nil
		})
	})

	t.Run("8 a rebound page opens the live feed", func(t *testing.T) {
		host := "rebind.example:" + url[strings.LastIndexByte(url, ':')+1:]
		h := http.Header{"Host": {host}, "Origin": {"http://" + host}}
		ws := "ws" + strings.TrimPrefix(url, "http") + "/ws"
		conn, resp, err := websocket.DefaultDialer.Dial(ws, h)
		if err == nil {
			conn.Close()
			t.Fatal("the websocket was accepted")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("upgrade under a foreign Host: %v %v, want 403", resp, err)
		}
		// Its own job: the page's own host gets the feed.
		conn, _, err = websocket.DefaultDialer.Dial(ws, http.Header{"Origin": {url}})
		if err != nil {
			t.Fatalf("the page's own websocket: %v", err)
		}
		conn.Close()
	})

	t.Run("9 a rebound page reads the snapshot", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url+"/api/snapshot", nil)
		req.Host = "rebind.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /api/snapshot under a foreign Host: %s, want 403", resp.Status)
		}
		if _, err := snapshot(url); err != nil {
			t.Errorf("the snapshot on the page's own host: %v", err)
		}
	})

	// The documented users kept doing their jobs: every device's readings
	// since the attacks began are stored, none missing.
	waitLedgerMoved(t, ledgerURL, before, 0)
}

// natsConn is a NATS connection that records the permission violations
// the server reports to it.
type natsConn struct {
	nc         *nats.Conn
	mu         sync.Mutex
	violations []string
}

func natsAs(t *testing.T, addr, user, password string) *natsConn {
	t.Helper()
	c := &natsConn{}
	nc, err := nats.Connect("nats://"+user+":"+password+"@"+addr, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.violations = append(c.violations, err.Error())
		c.mu.Unlock()
	}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// violation waits for the server to report a publish permission violation
// on subject.
func (c *natsConn) violation(t *testing.T, subject string) {
	t.Helper()
	testharness.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, v := range c.violations {
			if strings.Contains(strings.ToLower(v), "permissions violation") && strings.Contains(v, `"`+subject+`"`) {
				return nil
			}
		}
		return errors.New("no permission violation reported for " + subject)
	})
}
