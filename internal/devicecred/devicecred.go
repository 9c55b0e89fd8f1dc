// Package devicecred is how a device proves who it is to the MQTT broker:
// a credential of its own, bound to the one topic it may publish on.
//
// A device's MQTT user name is its topic below telemetry/:
// <region>/<device-type>/<device-id>, for example us-east/thermostat/th-00001.
// Its password is derived from that name and a fleet secret shared by the
// simulator (`telemetry devices`, `telemetry demo`) and the broker:
// HMAC-SHA256(secret, name), the first 16 bytes in hex. The broker's ACL
// then needs one rule for every device, pattern write telemetry/%u
// (deploy/mosquitto/acl), so a device can publish only as itself, in its
// own region and under its own type, and a forger without the secret cannot
// log in as any device.
//
// The embedded broker checks a device's password against the secret
// (internal/broker); Mosquitto, which knows no secret, gets each device's
// line in its password file, made by `telemetry mqtt passwd`.
//
// A gateway (gateway.go) publishes for many devices over one connection,
// with a credential of its own derived the same way.
package devicecred

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// passwordBytes is how much of the HMAC a password keeps: 128 bits.
const passwordBytes = 16

// Username is the MQTT user name of the device id of type typ in region.
func Username(region, typ, id string) string { return region + "/" + typ + "/" + id }

// Parse reads a device's user name back into the topic it may publish on;
// ok is false for any other user name (a service user such as ingest).
func Parse(user string) (t protocol.Topic, ok bool) {
	region, rest, ok1 := strings.Cut(user, "/")
	typ, id, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || !protocol.ValidName(region) || !protocol.ValidName(typ) || !protocol.ValidName(id) {
		return protocol.Topic{}, false
	}
	return protocol.Topic{Region: region, DeviceType: typ, Device: id}, true
}

// Password is the MQTT password of the device user name under the fleet
// secret.
func Password(secret, user string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil)[:passwordBytes])
}

// Check reports whether password is the device user's under secret, in
// constant time. A user name that is not a device's never checks.
func Check(secret, user, password string) bool {
	if secret == "" {
		return false
	}
	if t, ok := Parse(user); !ok || t.DeviceType == PhoneType {
		return false // a phone's credential is short-lived: CheckPhone
	}
	return checkPassword(secret, user, password)
}

func checkPassword(secret, user, password string) bool {
	return hmac.Equal([]byte(Password(secret, user)), []byte(password))
}

// ValidSecret checks a fleet secret: long enough not to be guessed by
// trying (16 bytes or more).
func ValidSecret(secret string) error {
	if len(secret) < 16 {
		return fmt.Errorf("fleet secret of %d bytes: want at least 16", len(secret))
	}
	return nil
}
