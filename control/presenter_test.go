package control

import (
	"slices"
	"testing"
)

// The page's ledger names the devices with the most duplicates, most first.
func TestTopDevices(t *testing.T) {
	got := topDevices(map[string]uint64{"a": 1, "b": 5, "c": 5, "d": 2}, 3)
	if want := []string{"b 5", "c 5", "d 2"}; !slices.Equal(got, want) {
		t.Errorf("top devices %q, want %q", got, want)
	}
	if got := topDevices(nil, 3); len(got) != 0 {
		t.Errorf("top devices of none: %q", got)
	}
}
