package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// gw is the gateway these tests log in as: in us-east, for thermostats
// whose ids begin with th-gw-0001-.
var (
	gw      = devicecred.Gateway{Region: "us-east", DeviceType: "thermostat", ID: "th-gw-0001"}
	gwLogin = creds{gw.User(), devicecred.Password(deploy.DemoFleetSecret, gw.User())}
	// gwDevices are the devices behind gw that Mosquitto's ACL lists.
	gwDevices = []string{gw.DeviceID("00001"), gw.DeviceID("00002")}
)

// gatewayBrokers are the two brokers with gw known: Mosquitto with its
// password line and its ACL block (what `telemetry mqtt passwd --gateway`
// writes), the embedded broker as it is, from the fleet secret.
var gatewayBrokers = []struct {
	name  string
	start func(t *testing.T) string
	// deniedPublishDisconnects and refusesSubscribe: as for brokers.
	deniedPublishDisconnects, refusesSubscribe bool
}{
	{name: "mosquitto", start: func(t *testing.T) string {
		acl, err := broker.FleetACL(deploy.MosquittoACL, map[devicecred.Gateway][]string{gw: gwDevices})
		if err != nil {
			t.Fatal(err)
		}
		return testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{
			Devices: []string{gw.User(), device.user, deviceLogin("thermostat", "th-00002").user}, ACL: acl,
		}).Addr()
	}},
	{name: "embedded", start: startEmbedded, deniedPublishDisconnects: true, refusesSubscribe: true},
}

// subscribeAll is a collector of every message under telemetry/, through
// ingest's user (which may read all of it): it would see a publish on a
// topic of one level, where no region's ingest subscribes.
func subscribeAll(t *testing.T, addr string) *collector {
	t.Helper()
	c := &collector{}
	cl := mustConnect(t, addr, ingest, "telemetry-ingest-all", c.handle)
	if tok := cl.Subscribe("telemetry/#", 1, nil); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing to telemetry/#: %v", tok.Error())
	}
	return c
}

// TestGatewayLogsInAsItself: a gateway logs in with its own credential
// and its user name as client id; a device's credential, another
// gateway's password or a forged one does not make a gateway.
func TestGatewayLogsInAsItself(t *testing.T) {
	other := devicecred.Gateway{Region: "us-east", DeviceType: "thermostat", ID: "th-gw-0002"}
	cases := []struct {
		name string
		c    creds
		id   string // client id; "" is the gateway's user name
		ok   bool
		// embeddedOnly: Mosquitto lets this one in, with its user name as
		// client id (use_username_as_clientid).
		embeddedOnly bool
	}{
		{"gateway", gwLogin, "", true, false},
		{"gateway with another gateway's password", creds{gw.User(), devicecred.Password(deploy.DemoFleetSecret, other.User())}, "", false, false},
		{"gateway with a device's password", creds{gw.User(), device.password}, "", false, false},
		{"gateway with a password of another fleet secret", creds{gw.User(), devicecred.Password("another-fleet-secret", gw.User())}, "", false, false},
		{"a device's name as a gateway's", creds{"gateway.us-east.thermostat.th-00001", device.password}, "", false, false},
		{"gateway under one of its devices' client ids", gwLogin, gwDevices[0], false, true},
	}
	for _, b := range gatewayBrokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			for _, c := range cases {
				if c.embeddedOnly && b.name != "embedded" {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					id := c.id
					if id == "" {
						id = c.c.user
					}
					cl, err := connect(addr, c.c, id, nil)
					if err == nil {
						cl.Disconnect(50)
					}
					if got := err == nil; got != c.ok {
						t.Errorf("connect as %q (client id %s): error %v, want accepted=%v", c.c.user, id, err, c.ok)
					}
				})
			}
		})
	}
}

// TestGatewayPublishesForItsOwnDevicesOnly: a gateway's readings for its
// devices arrive, each on its device's own topic; a publish for any other
// device, in another region or type, or under its own name is never
// delivered (shown by a sentinel, as in TestDeviceCannotPublishToAnotherTopic).
func TestGatewayPublishesForItsOwnDevicesOnly(t *testing.T) {
	own := func(i int) string { return "telemetry/us-east/thermostat/" + gwDevices[i] }
	forbidden := []struct{ name, topic string }{
		{"another gateway's device", "telemetry/us-east/thermostat/th-gw-0002-00001"},
		{"a device with a credential of its own", "telemetry/us-east/thermostat/th-00001"},
		{"its own id as a device", "telemetry/us-east/thermostat/th-gw-0001"},
		{"an id that only begins like its own", "telemetry/us-east/thermostat/th-gw-00011-00001"},
		{"its device in another region", "telemetry/eu-west/thermostat/" + gwDevices[0]},
		{"its device under another type", "telemetry/us-east/vibration/" + gwDevices[0]},
		{"below its device's topic", own(0) + "/extra"},
		{"its own name below telemetry/ (the device pattern)", "telemetry/" + gw.User()},
	}
	for _, b := range gatewayBrokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			got := subscribeAll(t, addr)
			pub := mustConnect(t, addr, gwLogin, gw.User(), nil)
			for i := range gwDevices {
				if err := publish(pub, own(i), "reading"); err != nil {
					t.Fatalf("the gateway publishing for %s: %v", gwDevices[i], err)
				}
			}
			testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
				for i := range gwDevices {
					if !got.has(own(i) + " reading") {
						return fmt.Errorf("the reading of %s has not arrived", gwDevices[i])
					}
				}
				return nil
			})
			for i, f := range forbidden {
				t.Run(f.name, func(t *testing.T) {
					pub := mustConnect(t, addr, gwLogin, gw.User(), nil)
					bad, sentinel := fmt.Sprintf("forbidden-%d", i), fmt.Sprintf("sentinel-%d", i)
					err := publish(pub, f.topic, bad)
					if b.deniedPublishDisconnects {
						if err == nil && pub.IsConnectionOpen() {
							t.Errorf("forbidden publish acknowledged, connection still open")
						}
						pub = mustConnect(t, addr, gwLogin, gw.User(), nil)
					} else if err != nil {
						t.Fatalf("forbidden publish: %v (Mosquitto acknowledges and discards it)", err)
					}
					if err := publish(pub, own(0), sentinel); err != nil {
						t.Fatalf("publishing the sentinel for its own device: %v", err)
					}
					testharness.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
						if !got.has(own(0) + " " + sentinel) {
							return fmt.Errorf("sentinel not delivered yet")
						}
						return nil
					})
					if got.has(f.topic + " " + bad) {
						t.Errorf("the gateway published on %s and it was delivered", f.topic)
					}
				})
			}
		})
	}
}

// TestGatewayCannotSubscribe: a gateway reads nothing, its own devices'
// readings included (as TestDeviceCannotSubscribe).
func TestGatewayCannotSubscribe(t *testing.T) {
	filters := []string{"telemetry/#", "telemetry/us-east/thermostat/" + gwDevices[0], "$share/spies/telemetry/#"}
	for _, b := range gatewayBrokers {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			checkCannotSubscribe(t, addr, subscribeAll(t, addr), gwLogin, gw.User(), filters, b.refusesSubscribe)
		})
	}
}

// TestFleetACLRefusesDevicesNotTheGateways: Mosquitto's lines are only
// written for devices the gateway speaks for.
func TestFleetACLRefusesDevicesNotTheGateways(t *testing.T) {
	for _, id := range []string{"th-00001", "th-gw-0001", "th-gw-00011-x", "TH-GW-0001-1"} {
		if _, err := broker.FleetACL(deploy.MosquittoACL, map[devicecred.Gateway][]string{gw: {id}}); err == nil {
			t.Errorf("FleetACL wrote a line for %q under %s", id, gw.User())
		}
	}
	acl, err := broker.FleetACL(deploy.MosquittoACL, map[devicecred.Gateway][]string{gw: gwDevices})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := broker.ParseACL(acl)
	if err != nil {
		t.Fatalf("the ACL FleetACL wrote does not parse: %v", err)
	}
	for _, c := range []struct {
		topic string
		want  bool
	}{{"telemetry/us-east/thermostat/" + gwDevices[1], true}, {"telemetry/" + gw.User(), false}, {"telemetry/us-east/thermostat/th-00001", false}} {
		if got := parsed.Allowed(gw.User(), gw.User(), c.topic, true); got != c.want {
			t.Errorf("the written ACL lets the gateway publish on %s: %v, want %v", c.topic, got, c.want)
		}
	}
}
