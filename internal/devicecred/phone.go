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
// A phone's credential is short-lived: its password is a Ticket for its
// user name, so the broker needs no list of the phones it let join, and a
// password found later on a phone (or in a screenshot of it) stops working
// at its end. The ticket also carries when it was issued, so that the
// presenter can end every phone's credential at once (removing the phones:
// the broker refuses tickets issued before then). The phone key is derived
// from the fleet secret (PhoneKey): what hands out phones' credentials
// (the dashboard's join page) holds that key only, and cannot make any
// device's credential with it. A phone's user name never checks with a
// device's permanent password (Check), so the fleet secret's long-lived
// credentials cannot stand in for a phone's.
const PhoneType = "phone"

// MaxPhoneTTL bounds how long a ticket (a phone's credential, a join
// link) may last.
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

// Ticket is a pass for subject from issued until end under key:
// <issued, unix ms>.<end, unix s>.<HMAC-SHA256(key, subject, issued, end),
// first 16 bytes in hex>. A phone's password is the ticket of its user
// name (PhonePassword); the join link carries another.
func Ticket(key, subject string, issued, end time.Time) string {
	i, e := strconv.FormatInt(issued.UnixMilli(), 10), strconv.FormatInt(end.Unix(), 10)
	return i + "." + e + "." + ticketMAC(key, subject, i, e)
}

func ticketMAC(key string, parts ...string) string {
	m := hmac.New(sha256.New, []byte(key))
	for _, part := range parts {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil)[:passwordBytes])
}

// CheckTicket reports whether ticket is subject's under key, was issued
// after since (the zero time: whenever), and has not ended at now nor
// lasts longer than MaxPhoneTTL from now; in constant time for the MAC.
func CheckTicket(key, subject, ticket string, now, since time.Time) bool {
	if key == "" {
		return false
	}
	parts := strings.Split(ticket, ".")
	if len(parts) != 3 {
		return false
	}
	issued, ok1 := canonicalInt(parts[0])
	end, ok2 := canonicalInt(parts[1])
	if !ok1 || !ok2 {
		return false
	}
	if t := time.Unix(end, 0); !now.Before(t) || t.Sub(now) > MaxPhoneTTL {
		return false
	}
	if !since.IsZero() && issued <= since.UnixMilli() {
		return false
	}
	return hmac.Equal([]byte(ticketMAC(key, subject, parts[0], parts[1])), []byte(parts[2]))
}

// canonicalInt parses s as a number written one way only (no sign, no
// leading zero), so that no two texts of a ticket carry one MAC.
func canonicalInt(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}

// PhonePassword is the password of the phone user, issued at issued and
// lasting until end, under the phone key (PhoneKey of the fleet secret).
func PhonePassword(key, user string, issued, end time.Time) string {
	return Ticket(key, user, issued, end)
}

// IsPhone reports whether user is a phone's user name.
func IsPhone(user string) bool {
	t, ok := Parse(user)
	return ok && t.DeviceType == PhoneType
}

// CheckPhone reports whether password is the phone user's under the
// phone key, issued after since (the zero time: whenever) and not ended
// at now (CheckTicket).
func CheckPhone(key, user, password string, now, since time.Time) bool {
	return IsPhone(user) && CheckTicket(key, user, password, now, since)
}
