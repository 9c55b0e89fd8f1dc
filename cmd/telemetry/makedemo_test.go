package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestMakeDemoNeedsOnlyGo: the README's first command, on a fresh clone of
// a machine with Go and nothing else, builds and starts the demo; it never
// installs anything, asks for sudo, or needs Mosquitto or ClickHouse (the
// demo embeds its broker and runs without storage, saying so:
// TestDemoWithoutStorageSaysSoAndStillMoves). `make test` installs what
// the tests need.
func TestMakeDemoNeedsOnlyGo(t *testing.T) {
	recipe := func(target string) string {
		cmd := exec.Command("make", "-n", target)
		cmd.Dir = testharness.RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	demo := recipe("demo")
	if forbidden := regexp.MustCompile(`sudo|apt-get|deps\.sh|brew|mosquitto|clickhouse`).FindString(demo); forbidden != "" {
		t.Errorf("make demo runs %q:\n%s", forbidden, demo)
	}
	if !strings.Contains(demo, "go build") || !strings.Contains(demo, "telemetry demo") {
		t.Errorf("make demo does not build and start the demo:\n%s", demo)
	}
	if test := recipe("test"); !strings.Contains(test, "deps.sh") {
		t.Errorf("make test no longer installs what the tests need:\n%s", test)
	}
}
