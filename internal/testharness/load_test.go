package testharness

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// TestReadingsLoadHoldsWhatItCounts checks that the stream holds exactly
// the readings the load says JetStream acknowledged: each device's seq 1 to
// Last, once, valid, on its subject.
func TestReadingsLoadHoldsWhatItCounts(t *testing.T) {
	_, url := NATS(t, "us-east")
	js, err := jetstream.New(Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "READINGS", Subjects: []string{"telemetry.us-east.>"}})
	if err != nil {
		t.Fatal(err)
	}
	l := ReadingsLoad(t, js, LoadOptions{Region: "us-east", Prefix: "lt", Devices: 3, Rate: 500, Boot: 7, Metrics: []string{"a", "b"}})
	CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := l.Sent(); n < 30 {
			return fmt.Errorf("%d readings sent, want 30", n)
		}
		return nil
	})
	total := l.Stop(t)
	if again := l.Stop(t); again != total {
		t.Errorf("second Stop says %d readings, first %d", again, total)
	}
	last := l.Last()
	if len(last) != 3 {
		t.Errorf("Last %v, want 3 devices", last)
	}
	want := map[string]bool{}
	for d, n := range last {
		for seq := uint64(1); seq <= n; seq++ {
			want[fmt.Sprintf("%s:7:%d", d, seq)] = true
		}
	}
	if uint64(len(want)) != total {
		t.Errorf("Last %v adds up to %d readings, Stop says %d", last, len(want), total)
	}

	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for read := uint64(0); read < total; {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			read++
			r, err := protocol.Unmarshal(m.Data())
			if err != nil {
				t.Fatalf("%s: %v", m.Subject(), err)
			}
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != r.ID() || len(r.Readings) != 1 || len(r.Readings[0].Metrics) != 2 || m.Subject() != "telemetry.us-east.lt."+r.Device {
				t.Errorf("%s, Nats-Msg-Id %q: %+v", m.Subject(), id, r)
			}
			got[r.ID()]++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d readings", read, total)
		}
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != total {
		t.Errorf("stream holds %d readings after Stop, want %d", info.State.Msgs, total)
	}
	CheckExactlyOnce(t, "READINGS", want, got)
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the testing package's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestCheckExactlyOnce(t *testing.T) {
	want := map[string]bool{"d:1:1": true, "d:1:2": true, "d:1:3": true}
	tests := []struct {
		name    string
		got     map[string]int
		wantMsg string // empty: passes
	}{
		{"each once", map[string]int{"d:1:1": 1, "d:1:2": 1, "d:1:3": 1}, ""},
		{"one missing", map[string]int{"d:1:1": 1, "d:1:3": 1}, "X: 1 of 3 readings missing, 0 stored more than once, 0 unexpected"},
		{"one twice", map[string]int{"d:1:1": 1, "d:1:2": 2, "d:1:3": 1}, "X: 0 of 3 readings missing, 1 stored more than once, 0 unexpected"},
		{"one unexpected", map[string]int{"d:1:1": 1, "d:1:2": 1, "d:1:3": 1, "e:1:1": 1}, "X: 0 of 3 readings missing, 0 stored more than once, 1 unexpected"},
		{"nothing", nil, "X: 3 of 3 readings missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				CheckExactlyOnce(rec, "X", want, tt.got)
			}()
			<-done
			if tt.wantMsg == "" && rec.msg != "" {
				t.Errorf("failed: %s", rec.msg)
			}
			if tt.wantMsg != "" && !strings.HasPrefix(rec.msg, tt.wantMsg) {
				t.Errorf("message %q, want one starting %q", rec.msg, tt.wantMsg)
			}
		})
	}
}
