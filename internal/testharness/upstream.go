package testharness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// UpstreamVersion fails the test when go.mod requires module path at
// another version than version: the one the workarounds named in why were
// checked against. When go.mod moves the module, check each of them again
// (is the upstream bug fixed? does the workaround still hold?), then
// update the version in the test.
func UpstreamVersion(t *testing.T, path, version, why string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) < 2 || f[0] != path {
			continue
		}
		if f[1] != version {
			t.Fatalf("go.mod requires %s %s; the workarounds were checked against %s: check them again (%s), then update this test", path, f[1], version, why)
		}
		return
	}
	t.Fatalf("go.mod does not require %s any more: drop the workarounds (%s) and this test", path, why)
}
