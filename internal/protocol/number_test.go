package protocol

import (
	"math"
	"strconv"
	"testing"
)

var floatCases = []string{
	"0", "-0", "0.0", "-0.0", "1", "-1", "21.5", "40.2", "97.1", "0.1", "0.3", "123456789012345",
	"1234567890123456", "9007199254740993", "0.000001234", "1e22", "1e23", "1e-22", "1e-23",
	"123456789012345e-22", "123456789012345e7", "9.999999999999999e22", "1.7976931348623157e308",
	"1.7976931348623159e308", "1e309", "-1e400", "5e-324", "2e-324", "1e-400", "2.5E+3",
	"1E5", "0e99999", "1.00000000000000000000000001", "0.1e1", "100e-2", "4.35", "-273.15",
	"3.14159265358979323846264338327950288",
}

func TestParseFloat(t *testing.T) {
	for _, s := range floatCases {
		checkParseFloat(t, s)
	}
}

func FuzzParseFloat(f *testing.F) {
	for _, s := range floatCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d := (document{src: []byte(s)}); len(s) == 0 || !isNumberStart(s[0]) {
			return
		} else if _, rej := d.number(); rej != nil || d.pos != len(s) {
			return // not a JSON number
		}
		checkParseFloat(t, s)
	})
}

func isNumberStart(c byte) bool { return c == '-' || isDigit(c) }

func checkParseFloat(t *testing.T, s string) {
	t.Helper()
	want, err := strconv.ParseFloat(s, 64)
	got, ok := parseFloat([]byte(s))
	if wantOK := err == nil; ok != wantOK {
		t.Fatalf("parseFloat(%q) ok = %v, strconv says %v, %v", s, ok, want, err)
	}
	if ok && math.Float64bits(got) != math.Float64bits(want) {
		t.Fatalf("parseFloat(%q) = %v (%x), strconv says %v (%x)", s, got, math.Float64bits(got), want, math.Float64bits(want))
	}
}

func TestParseIntegers(t *testing.T) {
	uints := []struct {
		s  string
		v  uint64
		ok bool
	}{
		{"0", 0, true}, {"1", 1, true}, {"18446744073709551615", math.MaxUint64, true},
		{"18446744073709551616", 0, false}, {"99999999999999999999", 0, false},
		{"100000000000000000000", 0, false}, {"18446744073709551620", 0, false},
	}
	for _, tt := range uints {
		if v, ok := parseUint([]byte(tt.s)); v != tt.v || ok != tt.ok {
			t.Errorf("parseUint(%q) = %v, %v; want %v, %v", tt.s, v, ok, tt.v, tt.ok)
		}
	}
	ints := []struct {
		s  string
		v  int64
		ok bool
	}{
		{"0", 0, true}, {"-0", 0, true}, {"-1", -1, true}, {"9223372036854775807", math.MaxInt64, true},
		{"9223372036854775808", 0, false}, {"-9223372036854775808", math.MinInt64, true},
		{"-9223372036854775809", 0, false}, {"-18446744073709551616", 0, false},
	}
	for _, tt := range ints {
		if v, ok := parseInt([]byte(tt.s)); v != tt.v || ok != tt.ok {
			t.Errorf("parseInt(%q) = %v, %v; want %v, %v", tt.s, v, ok, tt.v, tt.ok)
		}
	}
}
