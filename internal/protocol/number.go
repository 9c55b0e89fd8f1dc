package protocol

import (
	"math"
	"math/bits"
	"strconv"
)

// Number parsing for values the scanner has already checked against the JSON
// number grammar.

// parseUint parses a number scanned without sign, fraction or exponent.
func parseUint(b []byte) (uint64, bool) {
	if len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		hi, lo := bits.Mul64(v, 10)
		d := uint64(c - '0')
		if hi != 0 || lo+d < lo {
			return 0, false
		}
		v = lo + d
	}
	return v, true
}

// parseInt parses a number scanned without fraction or exponent.
func parseInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	u, ok := parseUint(b)
	switch {
	case !ok || u > 1<<63 || u == 1<<63 && !neg:
		return 0, false
	case neg:
		return -int64(u), true // -(1<<63) wraps to itself, as it should
	}
	return int64(u), true
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat parses a JSON number. Most sensor values have few digits: those
// take the exact fast path (an integer below 2^53 times or divided by an exact
// power of ten is one correctly rounded operation); the rest go to strconv.
// It reports false when the value is out of float64's range.
func parseFloat(b []byte) (float64, bool) {
	if f, ok := parseFloatFast(b); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(string(b), 64)
	return f, err == nil && !math.IsInf(f, 0)
}

func parseFloatFast(b []byte) (float64, bool) {
	i, neg := 0, false
	if b[0] == '-' {
		neg, i = true, 1
	}
	var mant uint64
	digits, exp := 0, 0
	for ; i < len(b) && isDigit(b[i]); i++ {
		mant = mant*10 + uint64(b[i]-'0')
		if mant != 0 {
			digits++
		}
	}
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && isDigit(b[i]); i++ {
			mant = mant*10 + uint64(b[i]-'0')
			if mant != 0 {
				digits++
			}
			exp--
		}
	}
	if digits > 15 { // mant may have wrapped; 10^15 < 2^53
		return 0, false
	}
	if i < len(b) { // exponent
		i++
		eneg := false
		switch b[i] {
		case '-':
			eneg = true
			i++
		case '+':
			i++
		}
		if len(b)-i > 3 {
			return 0, false
		}
		e := 0
		for ; i < len(b); i++ {
			e = e*10 + int(b[i]-'0')
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	f := float64(mant)
	switch {
	case mant == 0:
	case exp < -22 || exp > 22:
		return 0, false
	case exp < 0:
		f /= pow10[-exp]
	default:
		f *= pow10[exp]
	}
	if neg {
		f = -f
	}
	return f, true
}
