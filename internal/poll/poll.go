// Package poll waits for a condition: tests use it instead of sleeping,
// and test helpers that cannot fail a test from their goroutine use it to
// retry with a deadline.
package poll

import (
	"fmt"
	"time"
)

// Until calls f every interval until it returns nil, and returns nil then;
// once total has passed it returns f's last error.
func Until(total, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(total)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not met after %s: %w", total, err)
		}
		<-tick.C
	}
}
