package dirlock

import (
	"errors"
	"io"
	"os"
	"os/exec"
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
