package testharness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/telemetry-demo/telemetry/internal/chserver"
)

// InCI reports whether the tests run in CI (environment CI=true), where a
// missing server binary fails a test instead of skipping it.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// RequireBinary returns the path of the executable name, looked up on PATH.
// If it is missing the test is skipped with installHint, or fails in CI.
func RequireBinary(t testing.TB, name, installHint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingServer(t, fmt.Sprintf("%s not found on PATH; %s", name, installHint))
	}
	return p
}

// RequireClickHouse returns the command line that runs a ClickHouse server
// (see chserver.Find), skipping the test when there is none, or failing
// it in CI.
func RequireClickHouse(t testing.TB) []string {
	t.Helper()
	argv, err := chserver.Find()
	if errors.Is(err, chserver.ErrNotFound) {
		missingServer(t, err.Error())
	}
	if err != nil {
		t.Fatalf("looking for ClickHouse: %v", err)
	}
	return argv
}

// RequireDocker checks that a Docker engine answers and that the docker
// command has the compose plugin (make compose-up installs it), skipping
// the test when either is missing, or failing it in CI.
func RequireDocker(t testing.TB) {
	t.Helper()
	RequireBinary(t, "docker", "install Docker (Debian: apt-get install docker.io)")
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		missingServer(t, fmt.Sprintf("no Docker engine answers (start dockerd): %v: %s", err, lastLine(out)))
	}
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		missingServer(t, fmt.Sprintf("docker has no compose plugin (scripts/compose-cli.sh installs it): %v: %s", err, lastLine(out)))
	}
}

// lastLine is the last non-empty line of a command's output.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

func missingServer(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI=true: a missing server fails the test instead of skipping it)", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// RepoRoot returns the repository's root: the first directory holding
// go.mod, walking up from the test's working directory (its package).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod in %s or any parent", dir)
		}
	}
}
