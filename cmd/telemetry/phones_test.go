package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/pipeline"
	"github.com/telemetry-demo/telemetry/storage"
)

// TestAPhoneJoinsTheDemo: with --mqtt-ws, a phone that asks the
// dashboard's POST /api/join gets a device of its own, logs in over MQTT on
// WebSocket with it, and its reading goes through ingest and JetStream into
// ClickHouse under its id and type phone, once.
func TestAPhoneJoinsTheDemo(t *testing.T) {
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", MQTTWS: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 3, Rate: 3, Seed: 1,
	})
	url := consoleValue(t, out, dashboardLine)
	consoleValue(t, out, regexp.MustCompile(`phones join\s+POST (\S+)`))
	addr := consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))

	resp, err := http.Post(url+"/api/join", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var c join.Credential
	err = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil {
		t.Fatalf("POST /api/join: %s (%v)", resp.Status, err)
	}
	phone := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).
		SetUsername(c.User).SetPassword(c.Password).SetAutoReconnect(false))
	if tok := phone.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone logging in at %s: %v", c.Broker, tok.Error())
	}
	defer phone.Disconnect(50)
	reading := fmt.Sprintf(`{"v":1,"device":%q,"boot":1,"seq":1,"ts":%d,"metrics":{"tilt_deg":12.5,"accel_ms2":9.81}}`, c.Device, time.Now().UnixMilli())
	for range 2 { // sent twice, stored once
		if tok := phone.Publish(c.Topic, 1, false, reading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("the phone publishing: %v", tok.Error())
		}
	}
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		var n uint64
		var typ, region string
		err := conn.QueryRow(context.Background(),
			`SELECT count(), any(device_type), any(region) FROM telemetry.readings FINAL WHERE device = ?`, c.Device).Scan(&n, &typ, &region)
		if err != nil || n != 2 || typ != "phone" || region != c.Region {
			return fmt.Errorf("ClickHouse holds %d rows of %s (type %q, region %q; want 2 metrics of one reading, phone, %s): %v", n, c.Device, typ, region, c.Region, err)
		}
		return nil
	})
}
