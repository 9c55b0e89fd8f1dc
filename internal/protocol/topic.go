package protocol

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	topicRoot     = "telemetry"
	namePattern   = `^[a-z0-9][a-z0-9-]{0,62}$`
	metricPattern = `^[a-z][a-z0-9_]{0,62}$`
	maxNameLen    = 63
)

// ValidName reports whether s is a valid device-id, region or device-type:
// ^[a-z0-9][a-z0-9-]{0,62}$. Such names are safe as MQTT topic levels and
// NATS subject tokens.
func ValidName(s string) bool { return validName(s) }

// ValidMetricName reports whether s is a valid metric name:
// ^[a-z][a-z0-9_]{0,62}$.
func ValidMetricName(s string) bool { return validMetricName(s) }

func validName[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > maxNameLen || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validMetricName[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > maxNameLen || !('a' <= s[0] && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ParseTopic parses telemetry/<region>/<device-type>/<device-id>. Each level
// after the first must be a ValidName. The returned fields share s's memory.
func ParseTopic(s string) (Topic, error) {
	if n := strings.Count(s, "/") + 1; n != 4 {
		return Topic{}, reject(ReasonBadTopic, "topic %s has %d levels, want 4 (telemetry/<region>/<device-type>/<device-id>)", quote(s), n)
	}
	root, rest, _ := strings.Cut(s, "/")
	region, rest, _ := strings.Cut(rest, "/")
	typ, dev, _ := strings.Cut(rest, "/")
	if root != topicRoot {
		return Topic{}, reject(ReasonBadTopic, "topic %s does not start with %q", quote(s), topicRoot+"/")
	}
	for _, l := range [...]struct{ what, v string }{{"region", region}, {"device-type", typ}, {"device-id", dev}} {
		if !validName(l.v) {
			return Topic{}, reject(ReasonBadTopic, "topic %s %s does not match %s", l.what, quote(l.v), namePattern)
		}
	}
	return Topic{Region: region, DeviceType: typ, Device: dev}, nil
}

// String returns the MQTT topic telemetry/<region>/<device-type>/<device-id>.
func (t Topic) String() string {
	return topicRoot + "/" + t.Region + "/" + t.DeviceType + "/" + t.Device
}

// Subject returns the JetStream subject telemetry.<region>.<device-type>.<device-id>
// a reading published on t is stored under.
func (t Topic) Subject() string {
	return topicRoot + "." + t.Region + "." + t.DeviceType + "." + t.Device
}

// ID returns "<device>:<boot>:<seq>", the reading's identity, used as the
// JetStream message id so that redeliveries are deduplicated.
func (r Reading) ID() string {
	var buf [maxNameLen + 2*(1+20)]byte
	b := append(buf[:0], r.Device...)
	b = append(b, ':')
	b = strconv.AppendUint(b, r.Boot, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, r.Seq, 10)
	return string(b)
}

// ID is the batch's JetStream message id: a v1 reading's own ID,
// "<device>:<boot>:<seq>", and for v2 "<device>:<boot>:<first>-<last>".
// A batch sent again with other boundaries has another id: JetStream
// keeps both, and storage, which deduplicates per reading, stores each
// reading once.
func (b Batch) ID() string {
	if b.Version != Version2 {
		return b.Readings[0].ID()
	}
	var buf [maxNameLen + 3*(1+20)]byte
	s := append(buf[:0], b.Device...)
	s = append(s, ':')
	s = strconv.AppendUint(s, b.Boot, 10)
	s = append(s, ':')
	s = strconv.AppendUint(s, b.First(), 10)
	s = append(s, '-')
	s = strconv.AppendUint(s, b.Last(), 10)
	return string(s)
}

// Time returns when the reading was measured.
func (r Reading) Time() time.Time { return time.UnixMilli(r.TS) }

// maxEcho bounds how much of untrusted input a Rejection's Detail quotes:
// this many bytes of escaped text, which is at most as many bytes of input.
const maxEcho = 64

// quote renders untrusted input for a Detail: quoted, with quotes, control
// characters, non-ASCII and invalid UTF-8 escaped, cut to maxEcho bytes of
// escaped text with "..." after the closing quote when cut.
func quote[T string | []byte](s T) string {
	const hex = "0123456789abcdef"
	buf := make([]byte, 1, maxEcho+8)
	buf[0] = '"'
	var esc [10]byte
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		}
		e := esc[:0]
		switch {
		case r == '"' || r == '\\':
			e = append(e, '\\', byte(r))
		case 0x20 <= r && r < 0x7f:
			e = append(e, byte(r))
		case r < utf8.RuneSelf || r == utf8.RuneError && size == 1:
			e = append(e, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		case r < 0x10000:
			e = append(e, '\\', 'u')
			for sh := 12; sh >= 0; sh -= 4 {
				e = append(e, hex[r>>sh&0xf])
			}
		default:
			e = append(e, '\\', 'U')
			for sh := 28; sh >= 0; sh -= 4 {
				e = append(e, hex[r>>sh&0xf])
			}
		}
		if len(buf)-1+len(e) > maxEcho {
			return string(append(buf, `"...`...))
		}
		buf = append(buf, e...)
		i += size
	}
	return string(append(buf, '"'))
}
