package devices

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// MaxGatewayDevices bounds Config.Gateway: the devices behind one gateway,
// all of whose unacknowledged messages share its connection's 65,535 MQTT
// packet ids.
const MaxGatewayDevices = 1000

// A link is an MQTT connection: a device's own, or with Config.Gateway a
// gateway's, which every device behind it publishes through (each on its
// own topic, so the broker checks the gateway's right to speak for it:
// internal/devicecred). A device only publishes through its link; the
// link's mutex makes one of its devices connect it at a time, and the last
// device to stop disconnects it.
type link struct {
	id, user string // client id and MQTT user name
	client   mqtt.Client
	mu       sync.Mutex   // held while connecting
	running  atomic.Int32 // devices on the link still running
}

// SplitUnit is the smallest range of devices (FirstDevice, Devices) a
// fleet split over processes may give each: 1, or with Gateway a block of
// gateways (regions x types x Gateway devices), so that no gateway's
// devices are in two processes.
func (c Config) SplitUnit() int {
	c = c.withDefaults()
	if c.Gateway == 0 {
		return 1
	}
	return c.gatewayBlock()
}

// gatewayBlock is how many consecutive devices of the whole fleet fill
// one gateway in every region and type: devices are placed round-robin
// over the regions and types (Config.place), so a gateway takes every
// slots-th device of a block.
func (c Config) gatewayBlock() int { return len(c.Regions) * len(c.Types) * c.Gateway }

// gatewayOf is the gateway of device j of the whole fleet, with
// c.Gateway above 0 and defaults filled in: the devices of one region and
// type, in order, Gateway to a gateway.
func (c Config) gatewayOf(j int) devicecred.Gateway {
	region, typ := c.place(j)
	slots := len(c.Regions) * len(c.Types)
	g := (j/(slots*c.Gateway))*slots + j%slots
	return devicecred.Gateway{Region: region, DeviceType: typ, ID: fmt.Sprintf("%s%s-gw-%04d", c.IDPrefix, idPrefix[typ], g+1)}
}

// deviceIDAt is the id of device j of the whole fleet, of type typ: behind
// a gateway its id begins with the gateway's.
func (c Config) deviceIDAt(j int, typ string) string {
	if c.Gateway == 0 {
		return deviceID(c.IDPrefix, typ, j)
	}
	return c.gatewayOf(j).DeviceID(fmt.Sprintf("%05d", j+1))
}

// Gateways lists, with cfg.Gateway above 0, every gateway of the fleet with
// the ids of the devices behind it: what Mosquitto's ACL needs
// (broker.FleetACL). It is empty without gateways.
func Gateways(cfg Config) (map[devicecred.Gateway][]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	out := map[devicecred.Gateway][]string{}
	if cfg.Gateway == 0 {
		return out, nil
	}
	for j := cfg.FirstDevice; j < cfg.FirstDevice+cfg.Devices; j++ {
		g := cfg.gatewayOf(j)
		_, typ := cfg.place(j)
		out[g] = append(out[g], cfg.deviceIDAt(j, typ))
	}
	return out, nil
}

// links builds the fleet's connections and gives each device its own:
// one per device, or with Gateway one per gateway.
func (f *Fleet) links() {
	byID := map[string]*link{}
	for _, d := range f.devices {
		id, user := d.id, d.user
		if f.cfg.Gateway > 0 {
			g := f.cfg.gatewayOf(d.index)
			id, user = g.User(), g.User() // a gateway's client id is its user name
		}
		l := byID[id]
		if l == nil {
			l = &link{id: id, user: user}
			l.client = mqtt.NewClient(f.clientOptions(l))
			byID[id] = l
			f.conns = append(f.conns, l)
		}
		l.running.Add(1)
		d.link = l
	}
}

// ensureConnected connects the device's link unless it is open, retrying
// as connect does; devices sharing a gateway's link connect it once.
func (f *Fleet) ensureConnected(ctx context.Context, l *link, tries uint) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client.IsConnectionOpen() {
		return nil
	}
	return f.connect(ctx, l, tries)
}

// release is a device's goodbye to its link: the last one out disconnects
// it.
func (f *Fleet) release(l *link) {
	if l.running.Add(-1) == 0 {
		f.disconnect(l)
	}
}
