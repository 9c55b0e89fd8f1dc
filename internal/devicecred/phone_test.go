package devicecred

import (
	"strings"
	"testing"
	"time"
)

func TestPhoneCredentialsAreShortLived(t *testing.T) {
	secret := PhoneKey("a-fleet-secret-of-some-length")
	now := time.Unix(1796600000, 0)
	issued := now.Add(-time.Minute)
	user := Username("eu-west", PhoneType, "ph-7f3a")
	end := now.Add(time.Hour)
	pw := PhonePassword(secret, user, issued, end)
	if !CheckPhone(secret, user, pw, now, time.Time{}) || !CheckPhone(secret, user, pw, now, issued.Add(-time.Millisecond)) {
		t.Fatal("a phone's own credential does not check before its end")
	}
	parts := strings.Split(pw, ".")
	i, e, mac := parts[0], parts[1], parts[2]
	for _, c := range []struct {
		name, secret, user, pw string
		at, since              time.Time
	}{
		{"at its end", secret, user, pw, end, time.Time{}},
		{"after its end", secret, user, pw, end.Add(time.Second), time.Time{}},
		{"issued when the phones were removed", secret, user, pw, now, issued},
		{"issued before the phones were removed", secret, user, pw, now, now},
		{"its end moved later", secret, user, i + ".9" + e + "." + mac, now, time.Time{}},
		{"its issue moved later", secret, user, "9" + i + "." + e + "." + mac, now, issued},
		{"its end with a leading zero", secret, user, i + ".0" + e + "." + mac, now, time.Time{}},
		{"a negative issue", secret, user, "-" + i + "." + e + "." + mac, now, time.Time{}},
		{"another phone's password", secret, Username("eu-west", PhoneType, "ph-0000"), pw, now, time.Time{}},
		{"the same phone id in another region", secret, Username("us-east", PhoneType, "ph-7f3a"), pw, now, time.Time{}},
		{"a device's permanent password for a phone", secret, user, Password(secret, user), now, time.Time{}},
		{"another fleet secret's key", PhoneKey("another-fleet-secret"), user, pw, now, time.Time{}},
		{"made with the fleet secret itself", secret, user, PhonePassword("a-fleet-secret-of-some-length", user, issued, end), now, time.Time{}},
		{"no key", "", user, PhonePassword("", user, issued, end), now, time.Time{}},
		{"longer than a day", secret, user, PhonePassword(secret, user, issued, now.Add(MaxPhoneTTL+time.Minute)), now, time.Time{}},
		{"a device that is no phone", secret, Username("eu-west", "thermostat", "ph-7f3a"), PhonePassword(secret, Username("eu-west", "thermostat", "ph-7f3a"), issued, end), now, time.Time{}},
		{"a ticket of another subject", secret, user, Ticket(secret, "join link", issued, end), now, time.Time{}},
		{"no issue", secret, user, e + "." + mac, now, time.Time{}},
		{"no end", secret, user, mac, now, time.Time{}},
	} {
		if CheckPhone(c.secret, c.user, c.pw, c.at, c.since) {
			t.Errorf("%s: checks", c.name)
		}
	}
	if Check(secret, user, Password(secret, user)) {
		t.Error("a phone's user name checks with a permanent device password")
	}
}
