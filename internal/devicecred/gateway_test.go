package devicecred

import (
	"testing"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

func TestGatewayCredentials(t *testing.T) {
	const secret = "a-fleet-secret-of-some-length"
	g := Gateway{Region: "eu-west", DeviceType: "thermostat", ID: "th-gw-0001"}
	user := g.User()
	if user != "gateway.eu-west.thermostat.th-gw-0001" {
		t.Fatalf("User = %q", user)
	}
	if back, ok := ParseGateway(user); !ok || back != g {
		t.Fatalf("ParseGateway(%q) = %v, %v", user, back, ok)
	}
	if _, ok := Parse(user); ok {
		t.Fatalf("a gateway's name %q parses as a device's", user)
	}
	pw := Password(secret, user)
	if !CheckGateway(secret, user, pw) {
		t.Fatal("a gateway's own password does not check")
	}
	if Check(secret, user, pw) {
		t.Fatal("a gateway's credential checks as a device's")
	}
	device := Username("eu-west", "thermostat", "th-gw-0001")
	for _, c := range []struct{ name, secret, user, pw string }{
		{"a device's own credential", secret, device, Password(secret, device)},
		{"another gateway's password", secret, Gateway{"eu-west", "thermostat", "th-gw-0002"}.User(), pw},
		{"the same gateway in another region", secret, Gateway{"us-east", "thermostat", "th-gw-0001"}.User(), pw},
		{"another secret", secret + "x", user, pw},
		{"no secret", "", user, Password("", user)},
		{"an empty password", secret, user, ""},
	} {
		if CheckGateway(c.secret, c.user, c.pw) {
			t.Errorf("%s: checks as a gateway", c.name)
		}
	}
	for _, bad := range []string{"gateway.eu-west.thermostat", "gateway.eu-west.thermostat.gw.x", "gateway.EU.t.g",
		"gateway..t.g", "gateway.eu-west/thermostat/gw", "eu-west.thermostat.gw", "gateway.+.t.g", "ingest"} {
		if _, ok := ParseGateway(bad); ok {
			t.Errorf("ParseGateway(%q) accepted", bad)
		}
	}
}

func TestGatewaySpeaksForItsOwnDevicesOnly(t *testing.T) {
	g := Gateway{Region: "eu-west", DeviceType: "thermostat", ID: "th-gw-0001"}
	for _, c := range []struct {
		region, typ, device string
		want                bool
	}{
		{"eu-west", "thermostat", g.DeviceID("00001"), true},
		{"eu-west", "thermostat", "th-gw-0001-x-y", true},
		{"eu-west", "thermostat", "th-gw-0001", false},  // the gateway's own id is no device of it
		{"eu-west", "thermostat", "th-gw-00011", false}, // another gateway's id that begins alike
		{"eu-west", "thermostat", "th-gw-0002-00001", false},
		{"eu-west", "thermostat", "th-00001", false},
		{"us-east", "thermostat", g.DeviceID("00001"), false},
		{"eu-west", "vibration", g.DeviceID("00001"), false},
	} {
		top := protocol.Topic{Region: c.region, DeviceType: c.typ, Device: c.device}
		if got := g.SpeaksFor(top); got != c.want {
			t.Errorf("SpeaksFor(%s) = %v, want %v", top, got, c.want)
		}
	}
}
