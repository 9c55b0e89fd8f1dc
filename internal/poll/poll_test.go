package poll

import (
	"errors"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	calls := 0
	if err := Until(time.Second, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, calls)
	}
	never := errors.New("never")
	if err := Until(10*time.Millisecond, time.Millisecond, func() error { return never }); !errors.Is(err, never) {
		t.Fatalf("Until = %v, want the condition's last error", err)
	}
}
