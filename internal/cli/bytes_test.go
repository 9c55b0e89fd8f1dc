package cli

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "2MiB": 2 << 20, "1 GiB": 1 << 30, "512KiB": 512 << 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1GB", "-1", "1.5GiB", "99999999999TiB"} {
		if n, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, n)
		}
	}
}
