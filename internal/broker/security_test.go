package broker_test

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// The security tests run against both brokers of the pipeline, each from
// the repository's passwd and acl: real Mosquitto (compose, and the
// integration tests) and the embedded broker (telemetry demo).
var brokers = []struct {
	name  string
	start func(t *testing.T) string // returns the broker's address, host:port
	// deniedPublishDisconnects: a QoS 1 publish the ACL denies makes the
	// broker drop the MQTT 3.1.1 connection (mochi) instead of
	// acknowledging the publish and discarding it (Mosquitto).
	deniedPublishDisconnects bool
	// refusesSubscribe: a subscription the ACL does not allow gets a
	// failure in its SUBACK (mochi); Mosquitto 2.0 grants any
	// subscription and then delivers nothing the client may not read.
	refusesSubscribe bool
}{
	{name: "mosquitto", start: func(t *testing.T) string {
		return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Devices: []string{device.user, deviceLogin("thermostat", "th-00002").user}}).Addr()
	}},
	{name: "embedded", start: startEmbedded, deniedPublishDisconnects: true, refusesSubscribe: true},
}

func startEmbedded(t *testing.T) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addr()
}

type creds struct{ user, password string }

// deviceLogin is the login of device id of type typ in us-east, under the
// demo fleet secret (internal/devicecred); its client id must be id.
func deviceLogin(typ, id string) creds {
	u, p := testharness.DeviceLogin("us-east", typ, id)
	return creds{u, p}
}

var (
	// device is th-00001, the device most tests here connect as.
	device = deviceLogin("thermostat", "th-00001")
	ingest = creds{deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword}
)

func connect(addr string, c creds, clientID string, h mqtt.MessageHandler) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetUsername(c.user).SetPassword(c.password)
	if h != nil {
		opts.SetDefaultPublishHandler(h)
	}
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("no CONNACK within 15s")
	}
	return cl, tok.Error()
}

func mustConnect(t *testing.T, addr string, c creds, clientID string, h mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	cl, err := connect(addr, c, clientID, h)
	if err != nil {
		t.Fatalf("connecting %s as %s: %v", clientID, c.user, err)
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return cl
}

// TestOnlyKnownUsersConnect: every device logs in with its own credential
// (internal/devicecred); a forger who knows a device's name but not the
// fleet secret cannot, and the old shared fleet user is gone.
func TestOnlyKnownUsersConnect(t *testing.T) {
	other := deviceLogin("thermostat", "th-00002")
	cases := []struct {
		name string
		c    creds
		id   string // client id; "" is th-00001
		ok   bool
		// embeddedOnly: Mosquitto lets this one in, under its own user
		// name as client id (TestDeviceCannotTakeAnotherDevicesSession).
		embeddedOnly bool
	}{
		{"anonymous", creds{}, "", false, false},
		{"device with another device's password", creds{device.user, other.password}, "", false, false},
		{"device with a password of another fleet secret", creds{device.user, devicecred.Password("another-fleet-secret", device.user)}, "", false, false},
		{"device with ingest's password", creds{device.user, deploy.DemoMQTTIngestPassword}, "", false, false},
		{"the old shared fleet user", creds{"device", "device"}, "", false, false},
		{"unknown user", creds{"mallory", device.password}, "", false, false},
		{"password without a user", creds{"", device.password}, "", false, false},
		{"device under another device's client id", device, "th-00002", false, true},
		{"device", device, "", true, false},
		{"ingest", ingest, "telemetry-ingest-us-east", true, false},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			for _, c := range cases {
				if c.embeddedOnly && b.name != "embedded" {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					cl, err := connect(addr, c.c, cmp.Or(c.id, "th-00001"), nil)
					if err == nil {
						cl.Disconnect(50)
					}
					if got := err == nil; got != c.ok {
						t.Errorf("connect as %q: error %v, want accepted=%v", c.c.user, err, c.ok)
					}
				})
			}
		})
	}
}

// TestDeviceCannotTakeAnotherDevicesSession: a device that logs in under
// another device's client id does not disconnect that device, which MQTT's
// session takeover would do: the embedded broker refuses the login, and
// Mosquitto gives the intruder its own user name as client id
// (use_username_as_clientid on the devices' listener). The victim keeps
// its connection and its readings arrive; on Mosquitto the intruder's own
// readings still arrive too.
func TestDeviceCannotTakeAnotherDevicesSession(t *testing.T) {
	victim := deviceLogin("thermostat", "th-00002")
	const (
		victimTopic = "telemetry/us-east/thermostat/th-00002"
		ownTopic    = "telemetry/us-east/thermostat/th-00001"
	)
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			ingest := subscribeAsIngest(t, addr)
			v := mustConnect(t, addr, victim, "th-00002", nil)
			intruder, err := connect(addr, device, "th-00002", nil)
			switch {
			case b.name == "embedded" && err == nil:
				intruder.Disconnect(50)
				t.Fatal("the embedded broker let th-00001 log in under th-00002's client id")
			case b.name == "mosquitto" && err != nil:
				t.Fatalf("Mosquitto refused th-00001 under another client id (%v); it should give it its own", err)
			case b.name == "mosquitto":
				defer intruder.Disconnect(50)
				if err := publish(intruder, ownTopic, "own"); err != nil {
					t.Errorf("th-00001 publishing on its own topic: %v", err)
				}
			}
			if err := publish(v, victimTopic, "still here"); err != nil || !v.IsConnectionOpen() {
				t.Fatalf("th-00002 lost its connection to the intruder: %v", err)
			}
			want := []string{victimTopic + " still here"}
			if b.name == "mosquitto" {
				want = append(want, ownTopic+" own")
			}
			testharness.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
				for _, m := range want {
					if !ingest.has(m) {
						return fmt.Errorf("ingest has not received %q", m)
					}
				}
				return nil
			})
		})
	}
}

// collector is ingest's view of the broker: every message of the region,
// through the same shared subscription ingest makes, in arrival order.
type collector struct {
	mu   sync.Mutex
	msgs []string // topic payload
}

func (c *collector) handle(_ mqtt.Client, m mqtt.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m.Topic()+" "+string(m.Payload()))
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collector) has(msg string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.msgs, msg)
}

func subscribeAsIngest(t *testing.T, addr string) *collector {
	t.Helper()
	c := &collector{}
	cl := mustConnect(t, addr, ingest, "telemetry-ingest-us-east", c.handle)
	tok := cl.Subscribe("$share/ingest-us-east/telemetry/us-east/#", 1, nil)
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest subscribing: %v", tok.Error())
	}
	// paho keys the result by the filter without $share/<group>/.
	if code, ok := tok.(*mqtt.SubscribeToken).Result()["telemetry/us-east/#"]; !ok || code != 1 {
		t.Fatalf("ingest's shared subscription granted %#x, want QoS 1", code)
	}
	return c
}

func publish(cl mqtt.Client, topic, payload string) error {
	tok := cl.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(15 * time.Second) {
		return fmt.Errorf("no PUBACK within 15s")
	}
	return tok.Error()
}

// TestDeviceCannotPublishToAnotherTopic shows without waiting for nothing
// that a device's publish outside its own topic is never delivered: the
// device then publishes a sentinel on its own topic. Messages of one
// publisher reach a subscriber in order (MQTT 4.6), so once the sentinel
// has arrived, the forbidden message would have arrived before it. (On the
// embedded broker the forbidden publish ends the connection, and the
// sentinel goes on a new one: the forbidden message was discarded before
// the first connection closed.)
func TestDeviceCannotPublishToAnotherTopic(t *testing.T) {
	const own = "telemetry/us-east/thermostat/th-00001"
	forbidden := []struct{ name, topic string }{
		{"another device's topic", "telemetry/us-east/thermostat/th-00002"},
		{"another device's topic of another type", "telemetry/us-east/meter/th-00002"},
		{"below its own topic", own + "/extra"},
		{"its id as the device type", "telemetry/us-east/th-00001/th-00002"},
		// Its region and type are bound to it, not chosen at publish time.
		{"its own id in another region", "telemetry/eu-west/thermostat/th-00001"},
		{"its own id under another type", "telemetry/us-east/meter/th-00001"},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			got := subscribeAsIngest(t, addr)
			for i, f := range forbidden {
				t.Run(f.name, func(t *testing.T) {
					pub := mustConnect(t, addr, device, "th-00001", nil)
					bad, sentinel := fmt.Sprintf("forbidden-%d", i), fmt.Sprintf("sentinel-%d", i)
					err := publish(pub, f.topic, bad)
					if b.deniedPublishDisconnects {
						if err == nil && pub.IsConnectionOpen() {
							t.Errorf("forbidden publish acknowledged, connection still open")
						}
						pub = mustConnect(t, addr, device, "th-00001", nil)
					} else if err != nil {
						t.Fatalf("forbidden publish: %v (Mosquitto acknowledges and discards it)", err)
					}
					if err := publish(pub, own, sentinel); err != nil {
						t.Fatalf("publishing the sentinel on its own topic: %v", err)
					}
					testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
						if !got.has(own + " " + sentinel) {
							return fmt.Errorf("sentinel on the device's own topic not delivered yet")
						}
						return nil
					})
					if got.has(f.topic + " " + bad) {
						t.Errorf("device th-00001 published on %s and it was delivered", f.topic)
					}
				})
			}
		})
	}
}

// TestHealthOnlyReadsTheUptime: the healthcheck's user, whose password is
// public, logs in with a device-like client id and tries to publish a
// reading under it (the device pattern of the ACL applies to every user).
// The reading never reaches ingest; the user still reads the uptime. On
// Mosquitto the forbidden publish is acknowledged and discarded; the
// health client's next packet, a SUBSCRIBE, is answered only after it, and
// a device's sentinel published after that SUBACK reaches ingest after
// anything the broker routed before.
func TestHealthOnlyReadsTheUptime(t *testing.T) {
	health := creds{deploy.MQTTHealthUser, deploy.MQTTHealthPassword}
	const forged = "telemetry/us-east/probe/zz-77777"
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			got := subscribeAsIngest(t, addr)
			uptime := make(chan string, 16)
			h := mustConnect(t, addr, health, "zz-77777", func(_ mqtt.Client, m mqtt.Message) {
				select {
				case uptime <- m.Topic():
				default:
				}
			})
			err := publish(h, forged, "forged")
			if b.deniedPublishDisconnects {
				if err == nil && h.IsConnectionOpen() {
					t.Errorf("health's publish as a device acknowledged, connection still open")
				}
				h = mustConnect(t, addr, health, "zz-77777", func(_ mqtt.Client, m mqtt.Message) {
					select {
					case uptime <- m.Topic():
					default:
					}
				})
			} else if err != nil {
				t.Fatalf("health's publish: %v (Mosquitto acknowledges and discards it)", err)
			}
			// Its own job: the uptime.
			if tok := h.Subscribe("$SYS/broker/uptime", 0, nil); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
				t.Fatalf("health subscribing to the uptime: %v", tok.Error())
			}
			select {
			case topic := <-uptime:
				if topic != "$SYS/broker/uptime" {
					t.Errorf("health got %s", topic)
				}
			case <-time.After(30 * time.Second):
				t.Error("health read no uptime within 30 s")
			}

			dev := mustConnect(t, addr, device, "th-00001", nil)
			const own = "telemetry/us-east/thermostat/th-00001"
			if err := publish(dev, own, "sentinel"); err != nil {
				t.Fatal(err)
			}
			testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
				if !got.has(own + " sentinel") {
					return fmt.Errorf("the device's sentinel not delivered yet")
				}
				return nil
			})
			if got.has(forged + " forged") {
				t.Errorf("health published a reading on %s and ingest got it", forged)
			}
		})
	}
}

// rawClient speaks MQTT 3.1.1 over one TCP connection, so that the test
// sees every packet the broker sends, in order.
type rawClient struct {
	t    *testing.T
	conn net.Conn
}

func rawConnect(t *testing.T, addr string, c creds, clientID string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession, cp.ClientIdentifier, cp.Keepalive = true, clientID, 60
	cp.UsernameFlag, cp.Username = true, c.user
	cp.PasswordFlag, cp.Password = true, []byte(c.password)
	r := &rawClient{t: t, conn: conn}
	r.write(cp)
	if ack, ok := r.read().(*packets.ConnackPacket); !ok || ack.ReturnCode != 0 {
		t.Fatalf("CONNECT as %s: got %v", clientID, ack)
	}
	return r
}

func (r *rawClient) write(p packets.ControlPacket) {
	r.t.Helper()
	if err := p.Write(r.conn); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) read() packets.ControlPacket {
	r.t.Helper()
	p, err := packets.ReadPacket(r.conn)
	if err != nil {
		r.t.Fatalf("reading from the broker: %v", err)
	}
	return p
}

// subscribe returns the SUBACK's return code: the granted QoS, or 0x80.
func (r *rawClient) subscribe(filter string) byte {
	r.t.Helper()
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID, sp.Topics, sp.Qoss = 1, []string{filter}, []byte{1}
	r.write(sp)
	for {
		switch p := r.read().(type) {
		case *packets.SubackPacket:
			return p.ReturnCodes[0]
		case *packets.PublishPacket:
			r.t.Errorf("received %s before the SUBACK", p.TopicName)
		}
	}
}

// delivered pings the broker and returns the topics of the messages it
// sent before the PINGRESP.
func (r *rawClient) delivered() []string {
	r.t.Helper()
	r.write(packets.NewControlPacket(packets.Pingreq))
	var topics []string
	for {
		switch p := r.read().(type) {
		case *packets.PingrespPacket:
			return topics
		case *packets.PublishPacket:
			topics = append(topics, p.TopicName)
		}
	}
}

// TestDeviceCannotSubscribe: a device subscribing to others' readings is
// refused (embedded broker: SUBACK failure) or, where the broker grants
// the subscription (Mosquitto 2.0), gets nothing: another device publishes,
// ingest receives it, and then the subscribed device pings the broker.
// Mosquitto writes to a client in order, so a delivered message would come
// before the PINGRESP.
func TestDeviceCannotSubscribe(t *testing.T) {
	filters := []string{"telemetry/#", "#", "telemetry/us-east/thermostat/th-00002", "$share/spies/telemetry/#", "telemetry/+/+/th-00001"}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			checkCannotSubscribe(t, addr, subscribeAsIngest(t, addr), device, "th-00001", filters, b.refusesSubscribe)
		})
	}
}

// checkCannotSubscribe has the client of login and clientID subscribe to
// each of filters; then the device th-00002 publishes a reading, and once
// got has it, the client must have received nothing.
func checkCannotSubscribe(t *testing.T, addr string, got *collector, login creds, clientID string, filters []string, refusesSubscribe bool) {
	t.Helper()
	other := mustConnect(t, addr, deviceLogin("thermostat", "th-00002"), "th-00002", nil)
	for i, f := range filters {
		t.Run(f, func(t *testing.T) {
			spy := rawConnect(t, addr, login, clientID)
			code := spy.subscribe(f)
			if refusesSubscribe && code != 0x80 {
				t.Errorf("SUBACK %#x for %s, want 0x80 (refused)", code, f)
			}
			topic, payload := "telemetry/us-east/thermostat/th-00002", fmt.Sprintf("reading-%d", i)
			if err := publish(other, topic, payload); err != nil {
				t.Fatal(err)
			}
			testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
				if !got.has(topic + " " + payload) {
					return fmt.Errorf("the other device's reading has not arrived yet")
				}
				return nil
			})
			if d := spy.delivered(); len(d) > 0 {
				t.Errorf("%s subscribed to %s (SUBACK %#x) and received %s", login.user, f, code, strings.Join(d, ", "))
			}
		})
	}
}

// TestEmbeddedBrokerMetrics: refused logins are counted, and the count of
// QoS 1 messages mochi dropped at its in-flight limit is exported.
func TestEmbeddedBrokerMetrics(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := connect(b.Addr(), creds{}, "th-00001", nil); err == nil {
		t.Fatal("anonymous connect accepted")
	}
	mfs, err := b.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	// paho tries MQTT 3.1.1, then 3.1: one or two refusals.
	if v, ok := got["telemetry_broker_connections_refused_total/bad_login"]; !ok || v < 1 || v > 2 {
		t.Errorf("connections refused for bad_login = %v (present %v), want 1 or 2", v, ok)
	}
	if _, ok := got["telemetry_broker_inflight_dropped_total"]; !ok {
		t.Errorf("no telemetry_broker_inflight_dropped_total in %v", got)
	}
}

// TestMosquittoAcceptsGoHashedPasswords: a password file made by
// PasswordFile (what the demo makes when a presenter changes passwords) is
// one Mosquitto reads as its own.
func TestMosquittoAcceptsGoHashedPasswords(t *testing.T) {
	file, err := broker.PasswordFile(map[string]string{
		device.user: "changed-device", deploy.MQTTIngestUser: "changed-ingest",
		deploy.MQTTHealthUser: deploy.MQTTHealthPassword, // the harness probes with it
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Passwd: file}).Addr()
	for _, c := range []struct {
		c  creds
		ok bool
	}{
		{creds{device.user, "changed-device"}, true},
		{creds{deploy.MQTTIngestUser, "changed-ingest"}, true},
		{device, false},
		{ingest, false},
	} {
		cl, err := connect(addr, c.c, "th-00001", nil)
		if err == nil {
			cl.Disconnect(50)
		}
		if (err == nil) != c.ok {
			t.Errorf("%s/%s: %v, want accepted=%v", c.c.user, c.c.password, err, c.ok)
		}
	}
}
