package dirlock

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondLockIsRefusedWithTheHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "telemetry demo, pid 111")
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to open file descriptions: a second Acquire in
	// this process conflicts as another process's would.
	if _, err := Acquire(dir, "telemetry demo, pid 222"); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid 111") {
		t.Fatalf("second Acquire = %v, want ErrLocked naming pid 111", err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(dir, "telemetry demo, pid 333")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	again.Release()
}

// TestLockGoesWithItsProcess: a holder killed without cleaning up leaves
// no stale lock.
func TestLockGoesWithItsProcess(t *testing.T) {
	if os.Getenv("DIRLOCK_HOLD") != "" {
		if _, err := Acquire(os.Getenv("DIRLOCK_HOLD"), "child"); err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockGoesWithItsProcess$")
	cmd.Env = append(os.Environ(), "DIRLOCK_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("child: %q %v", buf, err)
	}
	if _, err := Acquire(dir, "parent"); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "child") {
		t.Fatalf("Acquire while the child holds it = %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(dir, "parent")
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}

// TestEmptyKeepsTheLock: Empty removes what the directory holds, and the
// lock still holds it.
func TestEmptyKeepsTheLock(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "first")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := os.MkdirAll(filepath.Join(dir, "nats", "us-east"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats", "us-east", "msgs"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Empty(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != FileName {
		t.Errorf("after Empty the dir holds %v, want only %s", entries, FileName)
	}
	if _, err := Acquire(dir, "second"); !errors.Is(err, ErrLocked) {
		t.Errorf("Acquire after Empty = %v, want ErrLocked", err)
	}
}
