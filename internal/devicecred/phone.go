package devicecred

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// PhoneType is the device type of a phone that joined from the audience
// (issue 19): its user name is <region>/phone/<phone-id>, as any device's.
//
// A phone's credential is short-lived: its password carries its end,
// <unix seconds>.<HMAC-SHA256(secret, "phone", user, end), first 16 bytes
// in hex>, so the broker needs no list of the phones it let join, and a
// password found later on a phone (or in a screenshot of it) stops working
// at its end. A phone's user name never checks with a device's permanent
// password (Check), so the fleet secret's long-lived credentials cannot
// stand in for a phone's.
const PhoneType = "phone"

// MaxPhoneTTL bounds how long a phone's credential may last.
const MaxPhoneTTL = 24 * time.Hour

// PhonePassword is the password of the phone user until end.
func PhonePassword(secret, user string, end time.Time) string {
	e := strconv.FormatInt(end.Unix(), 10)
	return e + "." + phoneMAC(secret, user, e)
}

func phoneMAC(secret, user, end string) string {
	m := hmac.New(sha256.New, []byte(secret))
	for _, part := range []string{PhoneType, user, end} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil)[:passwordBytes])
}

// IsPhone reports whether user is a phone's user name.
func IsPhone(user string) bool {
	t, ok := Parse(user)
	return ok && t.DeviceType == PhoneType
}

// CheckPhone reports whether password is the phone user's under secret
// and has not ended at now (nor lasts longer than MaxPhoneTTL from now,
// which no credential this package makes does), in constant time for
// the MAC.
func CheckPhone(secret, user, password string, now time.Time) bool {
	if secret == "" || !IsPhone(user) {
		return false
	}
	e, mac, ok := strings.Cut(password, ".")
	end, err := strconv.ParseInt(e, 10, 64)
	if !ok || err != nil || strconv.FormatInt(end, 10) != e {
		return false
	}
	if t := time.Unix(end, 0); !now.Before(t) || t.Sub(now) > MaxPhoneTTL {
		return false
	}
	return hmac.Equal([]byte(phoneMAC(secret, user, e)), []byte(mac))
}
