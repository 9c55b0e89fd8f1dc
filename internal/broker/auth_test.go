package broker

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// TestCommittedPasswordFileHasTheDemoDefaults checks deploy/mosquitto/passwd,
// made with mosquitto_passwd, against the demo default passwords the
// clients use: the file and the constants must change together.
func TestCommittedPasswordFileHasTheDemoDefaults(t *testing.T) {
	pw, err := ParsePasswords(deploy.MosquittoPasswd)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		deploy.MQTTIngestUser: deploy.DemoMQTTIngestPassword,
		deploy.MQTTHealthUser: deploy.MQTTHealthPassword,
	}
	var users []string
	for u, p := range want {
		users = append(users, u)
		if !pw.Check(u, p) {
			t.Errorf("deploy/mosquitto/passwd: %s's password is not the demo default %q", u, p)
		}
		if pw.Check(u, p+"x") {
			t.Errorf("%s: a wrong password passes", u)
		}
	}
	slices.Sort(users)
	if got := pw.Users(); !slices.Equal(got, users) {
		t.Errorf("deploy/mosquitto/passwd has users %v, want %v", got, users)
	}
	for u, h := range pw {
		if h.sha512Only || h.iterations < 101 {
			t.Errorf("%s: not a $7$ (PBKDF2-SHA512) hash", u)
		}
	}
}

func TestPasswordFileRoundTrip(t *testing.T) {
	file, err := PasswordFile(map[string]string{"device": "s3cret:with$odd chars", "ingest": "other"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(file), "device:$7$101$") {
		t.Errorf("file %q: want device:$7$101$...", file)
	}
	pw, err := ParsePasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	if !pw.Check("device", "s3cret:with$odd chars") || !pw.Check("ingest", "other") || pw.Check("device", "other") || pw.Check("nobody", "") {
		t.Error("passwords do not check as set")
	}
}

func TestParsePasswordsRefuses(t *testing.T) {
	for name, file := range map[string]string{
		"plain text":    "device:device\n",
		"no colon":      "device\n",
		"bad base64":    "device:$7$101$!!!$abc\n",
		"short hash":    "device:$7$101$jFh/4//tManjNjAy$ZoY8\n",
		"listed twice":  "a:" + hashOf(t, "x") + "\na:" + hashOf(t, "y") + "\n",
		"no iterations": "device:$7$$jFh/4//tManjNjAy$" + strings.Repeat("A", 88) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePasswords([]byte(file)); err == nil {
				t.Errorf("ParsePasswords(%q) accepted it", file)
			}
		})
	}
}

func hashOf(t *testing.T, pw string) string {
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestACL(t *testing.T) {
	const dev = "us-east/thermostat/th-00001" // internal/devicecred
	acl, err := ParseACL(deploy.MosquittoACL)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		client, user   string
		topic          string
		write, allowed bool
	}{
		{"device publishes on its own topic", "th-00001", dev, "telemetry/us-east/thermostat/th-00001", true, true},
		{"device publishes in another region, same id", "th-00001", dev, "telemetry/eu-west/thermostat/th-00001", true, false},
		{"device publishes under another type, same id", "th-00001", dev, "telemetry/us-east/meter/th-00001", true, false},
		{"device publishes with an empty type level", "th-00001", dev, "telemetry/us-east//th-00001", true, false},
		{"device publishes on another device's topic", "th-00001", dev, "telemetry/us-east/thermostat/th-00002", true, false},
		{"device publishes below its topic", "th-00001", dev, "telemetry/us-east/thermostat/th-00001/x", true, false},
		{"device publishes above its topic", "th-00001", dev, "telemetry/us-east/th-00001", true, false},
		{"device publishes elsewhere", "th-00001", dev, "other/th-00001", true, false},
		{"user name with a wildcard", "+", "us-east/thermostat/+", "telemetry/us-east/thermostat/+", true, false},
		{"device reads its own topic", "th-00001", dev, "telemetry/us-east/thermostat/th-00001", false, false},
		{"device subscribes to everything", "th-00001", dev, "telemetry/#", false, false},
		{"the old fleet user publishes", "th-00001", "device", "telemetry/us-east/thermostat/th-00001", true, false},
		{"ingest subscribes to its region, shared", "telemetry-ingest-us-east", "ingest", "$share/ingest-us-east/telemetry/us-east/#", false, true},
		{"ingest subscribes to everything", "telemetry-ingest-us-east", "ingest", "telemetry/#", false, true},
		{"ingest receives a reading", "telemetry-ingest-us-east", "ingest", "telemetry/us-east/thermostat/th-00001", false, true},
		{"ingest subscribes to #", "telemetry-ingest-us-east", "ingest", "#", false, false},
		{"ingest subscribes to $SYS", "telemetry-ingest-us-east", "ingest", "$SYS/#", false, false},
		{"ingest publishes a reading", "telemetry-ingest-us-east", "ingest", "telemetry/us-east/thermostat/th-00001", true, false},
		{"ingest publishes as a device", "zz-77777", "ingest", "telemetry/us-east/probe/zz-77777", true, false},
		{"health reads the uptime", "probe", "health", "$SYS/broker/uptime", false, true},
		{"health reads readings", "probe", "health", "telemetry/#", false, false},
		{"health publishes as a device", "zz-77777", "health", "telemetry/us-east/probe/zz-77777", true, false},
		{"anonymous publishes", "th-00001", "", "telemetry/us-east/thermostat/th-00001", true, false}, // refused at CONNECT anyway
		{"unknown user reads", "x", "mallory", "telemetry/#", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := acl.Allowed(tt.client, tt.user, tt.topic, tt.write); got != tt.allowed {
				t.Errorf("Allowed(%q, %q, %q, write=%v) = %v, want %v", tt.client, tt.user, tt.topic, tt.write, got, tt.allowed)
			}
		})
	}
}

func TestACLDenyWins(t *testing.T) {
	acl, err := ParseACL([]byte("user u\ntopic readwrite a/#\ntopic deny a/secret\npattern read p/%u/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic string
		write bool
		want  bool
	}{
		{"a/b", true, true}, {"a/secret", false, false}, {"a/secret", true, false},
		// The subscription is allowed; a/secret is still denied on delivery.
		{"a/#", false, true},
		{"p/u/x", false, true}, {"p/v/x", false, false},
	} {
		if got := acl.Allowed("c", "u", c.topic, c.write); got != c.want {
			t.Errorf("%s write=%v: %v, want %v", c.topic, c.write, got, c.want)
		}
	}
	if _, err := ParseACL([]byte("topic sometimes a/b\n")); err == nil {
		t.Error("unknown access accepted")
	}
}

func TestInsecureOnlyOnLoopback(t *testing.T) {
	for _, c := range []struct {
		listen string
		ok     bool
	}{{"127.0.0.1:1883", true}, {"[::1]:1883", true}, {"localhost:1883", true}, {"0.0.0.0:1883", false}, {":1883", false}, {"192.168.1.10:1883", false}} {
		err := Config{Listen: c.listen, Insecure: true}.Validate()
		if (err == nil) != c.ok || !c.ok && !errors.Is(err, ErrInsecureNotLoopback) {
			t.Errorf("insecure on %s: %v, want ok=%v", c.listen, err, c.ok)
		}
		if err := (Config{Listen: c.listen}).Validate(); err != nil {
			t.Errorf("%s without insecure: %v", c.listen, err)
		}
	}
}

func TestFleetPasswordFile(t *testing.T) {
	const secret = "a-fleet-secret-for-this-test"
	user := devicecred.Username("us-east", "thermostat", "th-00001")
	file, err := FleetPasswordFile(deploy.MosquittoPasswd, secret, []string{user})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := ParsePasswords(file)
	if err != nil {
		t.Fatal(err)
	}
	if !pw.Check(user, devicecred.Password(secret, user)) || !pw.Check(deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword) {
		t.Errorf("the file does not let the device and the base's users in: %v", pw.Users())
	}
	if pw.Check(user, devicecred.Password("another-fleet-secret", user)) {
		t.Error("a password of another secret passes")
	}
	if _, err := FleetPasswordFile(nil, secret, []string{"ingest"}); err == nil {
		t.Error("a service user accepted as a device")
	}
	if _, err := FleetPasswordFile([]byte("device:device\n"), secret, nil); err == nil {
		t.Error("a base with a plain-text password accepted")
	}
}
