package stream

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func startTestRegions(t *testing.T) *Embedded {
	t.Helper()
	e, err := StartEmbedded(EmbeddedConfig{Regions: DefaultRegions, DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Apply(ctx, DefaultTopology(DefaultRegions)); err != nil {
		t.Fatal(err)
	}
	return e
}

// checkFor polls f until it returns nil or the deadline passes.
func checkFor(t *testing.T, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("after %s: %v", total, err)
}

func TestEveryRegionHoldsEveryReading(t *testing.T) {
	e := startTestRegions(t)
	ctx := context.Background()
	const perRegion = 500
	js := map[string]jetstream.JetStream{}
	for _, r := range e.Regions() {
		nc, err := nats.Connect(e.URL(r))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js[r], err = jetstream.NewWithDomain(nc, r)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= perRegion; i++ {
			msg := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.probe.p-%d", r, i%7), Data: []byte("{}"), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-p-%d:1:%d", r, i%7, i))
			if _, err := js[r].PublishMsgAsync(msg); err != nil {
				t.Fatal(err)
			}
		}
		// A re-sent reading is collapsed by its message id.
		dup := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.probe.p-1", r), Data: []byte("{}"), Header: nats.Header{}}
		dup.Header.Set(jetstream.MsgIDHeader, r+"-p-1:1:1")
		if _, err := js[r].PublishMsgAsync(dup); err != nil {
			t.Fatal(err)
		}
		select {
		case <-js[r].PublishAsyncComplete():
		case <-time.After(10 * time.Second):
			t.Fatal("publishes not acknowledged")
		}
	}
	want := uint64(perRegion * len(e.Regions()))
	for _, r := range e.Regions() {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			s, err := js[r].Stream(ctx, ReadingsStream)
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			if info.State.Msgs != want {
				var src string
				for _, si := range info.Sources {
					src += fmt.Sprintf(" [%s lag=%d active=%s err=%v]", si.FilterSubject, si.Lag, si.Active, si.Error)
				}
				return fmt.Errorf("%s holds %d readings, want %d;%s", r, info.State.Msgs, want, src)
			}
			return nil
		})
	}
}

func TestApplyIsIdempotent(t *testing.T) {
	e := startTestRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Apply(ctx, DefaultTopology(DefaultRegions)); err != nil {
		t.Fatalf("second apply: %v", err)
	}
}
