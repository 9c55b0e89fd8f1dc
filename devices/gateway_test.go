package devices

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestGatewayLayout: with --gateway each gateway holds at most that many
// devices, all of its region and type, each with an id beginning with the
// gateway's (so the broker lets it speak for them); ids stay unique, and
// the MQTT users are the gateways'.
func TestGatewayLayout(t *testing.T) {
	cfg := Config{Devices: 50, Gateway: 4, IDPrefix: "gw-", Regions: []string{"eu-west", "us-east"}}
	gws, err := Gateways(cfg)
	if err != nil {
		t.Fatal(err)
	}
	users, err := Usernames(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != len(gws) {
		t.Fatalf("%d users for %d gateways", len(users), len(gws))
	}
	ids := map[string]bool{}
	for g, devs := range gws {
		if !slices.Contains(users, g.User()) {
			t.Errorf("gateway %s has no user", g.User())
		}
		if len(devs) == 0 || len(devs) > 4 {
			t.Errorf("gateway %s holds %d devices, want 1 to 4", g.User(), len(devs))
		}
		for _, id := range devs {
			if !g.SpeaksFor(protocol.Topic{Region: g.Region, DeviceType: g.DeviceType, Device: id}) || !protocol.ValidName(id) {
				t.Errorf("gateway %s does not speak for its device %s", g.User(), id)
			}
			if ids[id] {
				t.Errorf("device id %s twice", id)
			}
			ids[id] = true
		}
	}
	if len(ids) != 50 {
		t.Errorf("%d devices behind gateways, want 50", len(ids))
	}
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.devices {
		g := cfg.withDefaults().gatewayOf(d.index)
		if !ids[d.id] || d.link.user != g.User() || d.link.id != g.User() || g.Region != d.region || g.DeviceType != d.typ {
			t.Errorf("device %s (%s, %s) publishes through %s, want its gateway %s", d.id, d.region, d.typ, d.link.user, g.User())
		}
	}
	if len(f.conns) != len(gws) {
		t.Errorf("the fleet has %d connections for %d gateways", len(f.conns), len(gws))
	}
	for _, bad := range []Config{
		{Gateway: MaxGatewayDevices + 1},
		{Gateway: -1},
		{Gateway: 100, MaxInflight: 1000},
		{Gateway: 2, Devices: 10, FirstDevice: 5}, // inside a block of 18
	} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%+v) accepted", bad)
		}
	}
}

// clientIDs records the client id of every connection a broker accepts.
type clientIDs struct {
	mqtt.HookBase
	mu  sync.Mutex
	ids []string
}

func (c *clientIDs) ID() string           { return "client-ids" }
func (c *clientIDs) Provides(b byte) bool { return b == mqtt.OnSessionEstablished }
func (c *clientIDs) seen() []string       { c.mu.Lock(); defer c.mu.Unlock(); return slices.Clone(c.ids) }
func (c *clientIDs) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c.mu.Lock()
	c.ids = append(c.ids, cl.ID)
	c.mu.Unlock()
}

// TestFleetPublishesThroughGateways: the embedded broker, applying the
// gateway's rule from the fleet secret alone, takes one connection per
// gateway, and every reading of every device behind them arrives on the
// device's own topic, gapless, v1 and v2 alike.
func TestFleetPublishesThroughGateways(t *testing.T) {
	for _, batch := range []int{1, 5} {
		t.Run(map[int]string{1: "v1", 5: "v2"}[batch], func(t *testing.T) {
			ids := &clientIDs{}
			url := startBroker(t, ids)
			c := subscribe(t, url)
			cfg := Config{Broker: url, Devices: 20, Gateway: 4, Rate: 400, Duration: time.Second, Batch: batch}
			f := runFleet(t, cfg)
			s, sent := f.Stats(), f.Sent()
			const want = 400
			if s.Sent != want || s.Acked != want || s.Errors != 0 || s.InFlight != 0 {
				t.Errorf("stats %+v: want %d sent and acknowledged, no errors", s, want)
			}
			checkArrived(t, c, sent)
			gws, err := Gateways(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var devices []string
			for _, got := range ids.seen() {
				if got != "collector" {
					devices = append(devices, got)
				}
			}
			if len(devices) != len(gws) {
				t.Errorf("the broker took %d device connections (%v), want one per gateway, %d", len(devices), devices, len(gws))
			}
			for _, id := range devices {
				if g, ok := devicecred.ParseGateway(id); !ok || len(gws[g]) == 0 {
					t.Errorf("connection %s is no gateway of the fleet", id)
				}
			}
		})
	}
}

// TestFleetPublishesThroughGatewaysOnMosquitto: Mosquitto, with the
// password file and ACL `telemetry mqtt passwd --gateway` writes (a line
// per gateway, its devices' topics one by one), lets every gateway speak
// for its devices.
func TestFleetPublishesThroughGatewaysOnMosquitto(t *testing.T) {
	cfg := Config{Devices: 20, Gateway: 4, Rate: 400, Duration: time.Second, Batch: 5}
	passwd, err := PasswordFile(cfg, deploy.MosquittoPasswd)
	if err != nil {
		t.Fatal(err)
	}
	gws, err := Gateways(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acl, err := broker.FleetACL(deploy.MosquittoACL, gws)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(passwd), "\ngateway."); n != len(gws) {
		t.Errorf("the password file has %d gateway lines, want %d", n, len(gws))
	}
	b := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Passwd: passwd, ACL: acl})
	c := subscribe(t, b.URL())
	cfg.Broker = b.URL()
	f := runFleet(t, cfg)
	s, sent := f.Stats(), f.Sent()
	if s.Sent != 400 || s.Acked != 400 || s.Errors != 0 {
		t.Errorf("stats %+v: want 400 sent and acknowledged, no errors", s)
	}
	checkArrived(t, c, sent)
}
