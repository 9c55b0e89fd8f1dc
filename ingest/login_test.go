package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/ingest"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// A refused login must say so in the log, once, rather than leave the
// operator with nothing but "MQTT not connected" on /healthz.
func TestRefusedLoginIsLoggedOnce(t *testing.T) {
	broker := testharness.MosquittoBroker(t).URL()
	regions := testharness.Regions(t)
	var logs testharness.SyncBuffer
	in, err := ingest.New(ingest.Config{Region: "eu-west", Broker: broker, NATSURL: regions.URL("eu-west"), Password: "not-the-password"},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		in.Close()
	})

	// The client retries every few seconds: after three failed attempts the log
	// must still hold a single line about it.
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if n := connectFailures(t, in); n < 3 {
			return fmt.Errorf("%v failed connection attempts counted, want 3 or more", n)
		}
		return nil
	})
	if n := strings.Count(logs.String(), "MQTT connect failed"); n != 1 {
		t.Fatalf("%d log lines say the login failed, want 1:\n%s", n, logs.String())
	}
	line := logs.String()
	if !strings.Contains(line, "user="+"ingest") || !strings.Contains(strings.ToLower(line), "not authorized") && !strings.Contains(strings.ToLower(line), "bad user name or password") {
		t.Errorf("the log does not name the user and the broker's refusal:\n%s", line)
	}
	if err := in.Ready(); err == nil || !strings.Contains(err.Error(), "MQTT not connected") {
		t.Errorf("Ready() = %v, want MQTT not connected", err)
	}
}

// connectFailures reads telemetry_ingest_mqtt_connect_failures_total.
func connectFailures(t *testing.T, in *ingest.Ingest) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(in.Metrics())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "telemetry_ingest_mqtt_connect_failures_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no telemetry_ingest_mqtt_connect_failures_total")
	return 0
}
