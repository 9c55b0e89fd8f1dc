package devicecred

import "testing"

func TestCredentials(t *testing.T) {
	const secret = "a-fleet-secret-of-some-length"
	user := Username("us-east", "thermostat", "th-00001")
	if user != "us-east/thermostat/th-00001" {
		t.Fatalf("Username = %q", user)
	}
	top, ok := Parse(user)
	if !ok || top.String() != "telemetry/us-east/thermostat/th-00001" {
		t.Fatalf("Parse(%q) = %v, %v", user, top, ok)
	}
	pw := Password(secret, user)
	if len(pw) != 32 {
		t.Fatalf("password %q: want 32 hex digits", pw)
	}
	if !Check(secret, user, pw) {
		t.Fatal("a device's own password does not check")
	}
	for _, c := range []struct{ name, secret, user, pw string }{
		{"another device's password", secret, Username("us-east", "thermostat", "th-00002"), pw},
		{"the same id in another region", secret, Username("eu-west", "thermostat", "th-00001"), pw},
		{"the same id under another type", secret, Username("us-east", "meter", "th-00001"), pw},
		{"another secret", secret + "x", user, pw},
		{"no secret", "", user, Password("", user)},
		{"a service user", secret, "ingest", Password(secret, "ingest")},
		{"an empty password", secret, user, ""},
	} {
		if Check(c.secret, c.user, c.pw) {
			t.Errorf("%s: checks", c.name)
		}
	}
	for _, bad := range []string{"ingest", "us-east/thermostat", "us-east/thermostat/th-00001/x", "US-east/t/x", "us-east//x", "+/t/x", "us-east/t/#"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if ValidSecret("short") == nil || ValidSecret(secret) != nil {
		t.Error("ValidSecret: want at least 16 bytes")
	}
}
