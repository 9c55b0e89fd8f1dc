package protocol

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendEncode appends r to dst in the v1 wire format, compact, with the
// metrics in r's order:
//
//	{"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100000123,"metrics":{"temperature_c":21.5}}
//
// Values use the shortest representation that parses back to the same
// float64. It writes v1 whatever r.Version says, and does not validate r: a
// NaN or infinite value is written as null, which Decode rejects. It does not
// allocate when dst has room.
func AppendEncode(dst []byte, r Reading) []byte {
	dst = append(dst, `{"v":1,"device":`...)
	dst = appendJSONString(dst, r.Device)
	dst = append(dst, `,"boot":`...)
	dst = strconv.AppendUint(dst, r.Boot, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, r.TS, 10)
	dst = append(dst, `,"metrics":{`...)
	for i, m := range r.Metrics {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, m.Name)
		dst = append(dst, ':')
		dst = appendValue(dst, m.Value)
	}
	return append(dst, "}}"...)
}

// appendJSONString appends s quoted. Valid names need no escaping; anything
// else is escaped so the output stays valid JSON.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return appendEscaped(dst, s)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			dst = utf8.AppendRune(dst, r) // U+FFFD for invalid UTF-8
			i += size
			continue
		}
		i++
	}
	return append(dst, '"')
}

// AppendEncodeBatch appends readings as one v2 batch to dst, compact:
//
//	{"v":2,"device":"th-00042","boot":1764100000,"seq":17,"metrics":["temperature_c"],"readings":[[1764100000123,21.5],[1764100001123,21.6]]}
//
// The device, boot and first seq are readings[0]'s, the names its
// metrics'; every reading gives its values in that order, and the seqs
// that follow are implied. It does not check that the readings agree, nor
// the bounds (MaxBatchReadings, MaxBatchBytes); values are written as by
// AppendEncode. It does not allocate when dst has room.
func AppendEncodeBatch(dst []byte, readings []Reading) []byte {
	if len(readings) == 0 {
		return dst
	}
	r := readings[0]
	dst = append(dst, `{"v":2,"device":`...)
	dst = appendJSONString(dst, r.Device)
	dst = append(dst, `,"boot":`...)
	dst = strconv.AppendUint(dst, r.Boot, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"metrics":[`...)
	for i, m := range r.Metrics {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, m.Name)
	}
	dst = append(dst, `],"readings":[`...)
	for i, r := range readings {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = strconv.AppendInt(dst, r.TS, 10)
		for _, m := range r.Metrics {
			dst = append(dst, ',')
			dst = appendValue(dst, m.Value)
		}
		dst = append(dst, ']')
	}
	return append(dst, "]}"...)
}

// appendValue appends v in its shortest form that parses back to v, or
// null for NaN and infinities, which Decode rejects.
func appendValue(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}
