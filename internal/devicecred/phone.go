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
// <unix seconds>.<HMAC-SHA256(phone key, user, end), first 16 bytes in
// hex>, so the broker needs no list of the phones it let join, and a
// password found later on a phone (or in a screenshot of it) stops working
// at its end. The phone key is derived from the fleet secret (PhoneKey):
// what hands out phones' credentials (the dashboard's join page) holds
// that key only, and cannot make any device's credential with it. A
// phone's user name never checks with a device's permanent password
// (Check), so the fleet secret's long-lived credentials cannot stand in
// for a phone's.
const PhoneType = "phone"

// MaxPhoneTTL bounds how long a phone's credential may last.
const MaxPhoneTTL = 24 * time.Hour

// PhoneKey is the key of phones' credentials under the fleet secret.
func PhoneKey(secret string) string {
	if secret == "" {
		return ""
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("telemetry phone credentials"))
	return hex.EncodeToString(m.Sum(nil))
}

// PhonePassword is the password of the phone user until end, under the
// phone key (PhoneKey of the fleet secret).
func PhonePassword(key, user string, end time.Time) string {
	e := strconv.FormatInt(end.Unix(), 10)
	return e + "." + phoneMAC(key, user, e)
}

func phoneMAC(key, user, end string) string {
	m := hmac.New(sha256.New, []byte(key))
	for _, part := range []string{user, end} {
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

// CheckPhone reports whether password is the phone user's under the
// phone key and has not ended at now (nor lasts longer than MaxPhoneTTL
// from now), in constant time for the MAC.
func CheckPhone(key, user, password string, now time.Time) bool {
	if key == "" || !IsPhone(user) {
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
	return hmac.Equal([]byte(phoneMAC(key, user, e)), []byte(mac))
}
