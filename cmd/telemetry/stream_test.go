package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestStreamApplyTakesTheDuplicateWindow: `telemetry stream
// --duplicate-window` sets both streams' window, and a window nats-server
// would refuse is refused before anything is applied.
func TestStreamApplyTakesTheDuplicateWindow(t *testing.T) {
	const region = "solo"
	_, url := testharness.NATS(t, region)
	var stdout, stderr bytes.Buffer
	args := []string{"stream", "--regions", region, "--nats", region + "=" + url, "--stream-budget", "64MiB"}
	if code := run(append(args, "--duplicate-window", "50ms"), &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "shorter than nats-server's minimum") {
		t.Fatalf("--duplicate-window 50ms: exit %d, %s", code, stderr.String())
	}
	js, err := jetstream.New(testharness.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), stream.ReadingsStream); err == nil {
		t.Fatal("a refused window applied READINGS all the same")
	}

	stderr.Reset()
	if code := run(append(args, "--duplicate-window", "5s"), &stdout, &stderr); code != 0 {
		t.Fatalf("--duplicate-window 5s: exit %d: %s", code, stderr.String())
	}
	for _, name := range []string{stream.ReadingsStream, stream.DeadLetterStream} {
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Duplicates; got != 5*time.Second {
			t.Errorf("%s's duplicate window %v, want 5s", name, got)
		}
	}
	if got := stream.DefaultTopology(nil).DuplicateWindow; got != stream.DefaultDuplicateWindow {
		t.Errorf("the default topology's window %v, want DefaultDuplicateWindow %v", got, stream.DefaultDuplicateWindow)
	}
}
