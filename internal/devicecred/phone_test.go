package devicecred

import (
	"strings"
	"testing"
	"time"
)

func TestPhoneCredentialsAreShortLived(t *testing.T) {
	secret := PhoneKey("a-fleet-secret-of-some-length")
	now := time.Unix(1796600000, 0)
	user := Username("eu-west", PhoneType, "ph-7f3a")
	end := now.Add(time.Hour)
	pw := PhonePassword(secret, user, end)
	if !CheckPhone(secret, user, pw, now) {
		t.Fatal("a phone's own credential does not check before its end")
	}
	e, mac, _ := strings.Cut(pw, ".")
	for _, c := range []struct {
		name, secret, user, pw string
		at                     time.Time
	}{
		{"at its end", secret, user, pw, end},
		{"after its end", secret, user, pw, end.Add(time.Second)},
		{"its end moved later", secret, user, "9" + e + "." + mac, now},
		{"its end with a leading zero", secret, user, "0" + e + "." + mac, now},
		{"another phone's password", secret, Username("eu-west", PhoneType, "ph-0000"), pw, now},
		{"the same phone id in another region", secret, Username("us-east", PhoneType, "ph-7f3a"), pw, now},
		{"a device's permanent password for a phone", secret, user, Password(secret, user), now},
		{"another fleet secret's key", PhoneKey("another-fleet-secret"), user, pw, now},
		{"made with the fleet secret itself", secret, user, PhonePassword("a-fleet-secret-of-some-length", user, end), now},
		{"no key", "", user, PhonePassword("", user, end), now},
		{"longer than a day", secret, user, PhonePassword(secret, user, now.Add(MaxPhoneTTL+time.Minute)), now},
		{"a device that is no phone", secret, Username("eu-west", "thermostat", "ph-7f3a"), PhonePassword(secret, Username("eu-west", "thermostat", "ph-7f3a"), end), now},
		{"no end", secret, user, mac, now},
	} {
		if CheckPhone(c.secret, c.user, c.pw, c.at) {
			t.Errorf("%s: checks", c.name)
		}
	}
	if Check(secret, user, Password(secret, user)) {
		t.Error("a phone's user name checks with a permanent device password")
	}
}
