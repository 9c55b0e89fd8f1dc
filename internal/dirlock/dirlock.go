// Package dirlock keeps two demos off one data dir: the first takes an
// exclusive lock on a file in it for as long as it runs, and a second is
// refused at once, told which process holds it, before it touches
// anything. The lock is the kernel's (flock), so it goes with its process,
// however that ends: a demo killed with SIGKILL leaves no stale lock.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FileName is the lock file in a locked directory; it holds the owner's
// description.
const FileName = "LOCK"

// ErrLocked is returned, wrapped with who holds the lock, when another
// process has the directory.
var ErrLocked = errors.New("data dir in use")

// Lock holds a directory.
type Lock struct {
	f   *os.File
	dir string
}

// Acquire locks dir (creating it if needed) for this process, recording
// owner (e.g. "telemetry demo, pid 1234, dashboard http://...") in the
// lock file. If another process holds it, it returns ErrLocked with that
// process's owner text, and changes nothing.
func Acquire(dir, owner string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := lock(f); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s is held by %s", ErrLocked, dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(owner+"\n"), 0)
	}
	return &Lock{f: f, dir: dir}, nil
}

// Empty removes everything in the locked directory but the lock itself:
// a fresh start, safe because no other holder can be using it.
func (l *Lock) Empty() error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("emptying %s: %w", l.dir, err)
	}
	for _, e := range entries {
		if e.Name() == FileName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.dir, e.Name())); err != nil {
			return fmt.Errorf("emptying %s: %w", l.dir, err)
		}
	}
	return nil
}

// Release unlocks the directory. The lock file stays (removing it could
// race with a process locking it).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}
