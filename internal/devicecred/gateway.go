package devicecred

import (
	"strings"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// A gateway is one MQTT client publishing for many devices, as a site's
// hub does for the sensors wired to it. It is bound to one region and one
// device type, and speaks for the devices of that region and type whose
// ids begin with its own id and a dash: gateway th-gw-0001 speaks for
// th-gw-0001-00001, th-gw-0001-00002 and so on, on their own topics
// (telemetry/<region>/<type>/<device-id>, as if each device published
// itself), and for no other device.
//
// Its MQTT user name is gateway.<region>.<device-type>.<gateway-id> (for
// example gateway.eu-west.thermostat.th-gw-0001), its password derived from
// that name and the fleet secret as a device's is, and its client id is
// its user name. The dots keep the two kinds of name apart: no device name
// holds a dot, and the ACL's device pattern telemetry/%u makes of a
// gateway's name a topic of one level, which no reading has. A device that
// knows its own password cannot log in as a gateway, and a gateway's
// password lets it speak for its own devices only.
//
// The embedded broker applies this rule as written (internal/broker).
// Mosquitto's ACL cannot match the beginning of a topic level, so
// `telemetry mqtt passwd` writes a gateway's devices' topics one by one
// under its user (GatewayACL in internal/broker).
type Gateway struct {
	Region, DeviceType, ID string
}

// gatewayPrefix begins every gateway's user name.
const gatewayPrefix = "gateway."

// User is the gateway's MQTT user name, which is also its client id.
func (g Gateway) User() string {
	return gatewayPrefix + g.Region + "." + g.DeviceType + "." + g.ID
}

// DeviceID is the id of the gateway's device with the given suffix.
func (g Gateway) DeviceID(suffix string) string { return g.ID + "-" + suffix }

// SpeaksFor reports whether the gateway may publish on topic t: a device's
// topic in its region and type whose id begins with the gateway's id and a
// dash, followed by something.
func (g Gateway) SpeaksFor(t protocol.Topic) bool {
	rest, ok := strings.CutPrefix(t.Device, g.ID+"-")
	return ok && rest != "" && t.Region == g.Region && t.DeviceType == g.DeviceType
}

// ParseGateway reads a gateway's user name back; ok is false for any
// other name (a device's, a service user's).
func ParseGateway(user string) (g Gateway, ok bool) {
	rest, ok := strings.CutPrefix(user, gatewayPrefix)
	if !ok {
		return Gateway{}, false
	}
	f := strings.Split(rest, ".")
	if len(f) != 3 || !protocol.ValidName(f[0]) || !protocol.ValidName(f[1]) || !protocol.ValidName(f[2]) {
		return Gateway{}, false
	}
	return Gateway{Region: f[0], DeviceType: f[1], ID: f[2]}, true
}

// CheckGateway reports whether password is the gateway user's under
// secret, in constant time. A name that is not a gateway's never checks.
func CheckGateway(secret, user, password string) bool {
	if _, ok := ParseGateway(user); !ok || secret == "" {
		return false
	}
	return checkPassword(secret, user, password)
}
