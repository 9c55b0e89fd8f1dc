package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

// TestBlockedIngestSaysWhy: READINGS in eu-west refuses every reading (a
// stream set to refuse when full, and full). Ingest holds the readings
// back, and says why where a presenter looks: its heartbeat (the
// dashboard's card), /healthz (Ready) and /metrics. Once the stream takes
// readings again, every reading is stored once and the state clears.
func TestBlockedIngestSaysWhy(t *testing.T) {
	broker := openMosquitto(t).URL()
	regions := testharness.Regions(t)
	url := regions.URL("eu-west")
	in := runIngest(t, ingest.Config{Region: "eu-west", Broker: broker, NATSURL: url, MaxInflight: 64,
		RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
	js := jetStream(t, url, "eu-west")
	nc := testharness.Connect(t, url)
	beats := make(chan stream.IngestHeartbeat, 64)
	sub, err := nc.Subscribe(stream.HeartbeatSubject("eu-west"), func(m *nats.Msg) {
		var hb stream.IngestHeartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			select {
			case beats <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nextBeat := func(ok func(stream.IngestHeartbeat) error) stream.IngestHeartbeat {
		t.Helper()
		var last stream.IngestHeartbeat
		testharness.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			select {
			case last = <-beats:
				return ok(last)
			case <-time.After(2 * stream.HeartbeatInterval):
				return errors.New("no heartbeat")
			}
		})
		return last
	}

	pub := publisher(t, broker, "th-1")
	want := map[string]bool{}
	publishReadings(t, pub, "eu-west", "th-1", 1, 20, want)
	waitStored(t, js, stream.ReadingsStream, 20)
	nextBeat(func(hb stream.IngestHeartbeat) error {
		if hb.Accepted != 20 || hb.Blocked != "" {
			return fmt.Errorf("heartbeat %+v, want 20 accepted, not blocked", hb)
		}
		return nil
	})

	// READINGS refuses: full, and set to refuse new messages when full.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream.ReadingsStream)
	if err != nil {
		t.Fatal(err)
	}
	open := s.CachedInfo().Config
	full := open
	full.Discard, full.MaxMsgs = jetstream.DiscardNew, 20
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	publishReadings(t, pub, "eu-west", "th-1", 21, 40, want)
	hb := nextBeat(func(hb stream.IngestHeartbeat) error {
		if !strings.Contains(hb.Blocked, "READINGS full in eu-west") {
			return fmt.Errorf("heartbeat %+v, want blocked by a full READINGS", hb)
		}
		return nil
	})
	if err := in.Ready(); err == nil || !strings.Contains(err.Error(), "READINGS full in eu-west") {
		t.Errorf("Ready = %v, want the full stream named", err)
	}
	if v := gauge(t, in.Ingest, "telemetry_ingest_blocked_seconds"); v < ingest.BlockedAfter.Seconds() {
		t.Errorf("telemetry_ingest_blocked_seconds = %v, want at least %v", v, ingest.BlockedAfter.Seconds())
	}
	t.Logf("blocked: %q since %s", hb.Blocked, hb.Since.Format(time.TimeOnly))

	// Room again: everything held back arrives, once.
	if _, err := js.UpdateStream(ctx, open); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, stream.ReadingsStream, 40)
	checkExactlyOnce(t, js, want)
	nextBeat(func(hb stream.IngestHeartbeat) error {
		if hb.Blocked != "" || hb.Accepted != 40 {
			return fmt.Errorf("heartbeat %+v, want 40 accepted, not blocked", hb)
		}
		return nil
	})
	if err := in.Ready(); err != nil {
		t.Errorf("Ready after the stream took readings again: %v", err)
	}
}

// gauge reads one of in's gauges.
func gauge(t *testing.T, in *ingest.Ingest, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(in.Metrics())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
