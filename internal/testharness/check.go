package testharness

import "testing"

// CheckExactlyOnce fails the test unless where holds each reading of want
// exactly once and nothing else. got counts, per reading identity
// (protocol.Reading.ID), the copies that where holds.
func CheckExactlyOnce(t testing.TB, where string, want map[string]bool, got map[string]int) {
	t.Helper()
	missing, doubled, unknown := 0, 0, 0
	for id := range want {
		if got[id] == 0 {
			missing++
		}
	}
	for id, n := range got {
		if !want[id] {
			unknown++
		}
		if n > 1 {
			doubled++
		}
	}
	if missing+doubled+unknown > 0 {
		t.Fatalf("%s: %d of %d readings missing, %d stored more than once, %d unexpected", where, missing, len(want), doubled, unknown)
	}
}
