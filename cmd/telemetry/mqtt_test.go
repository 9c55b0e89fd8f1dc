package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// TestDemoInsecureOnlyOnLoopback: anonymous MQTT is refused outright on an
// address others can reach, before anything starts.
func TestDemoInsecureOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		var out, errb bytes.Buffer
		code := run([]string{"demo", "--insecure", "--mqtt", addr, "--data-dir", t.TempDir()}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "loopback") || !strings.Contains(errb.String(), "--insecure") {
			t.Errorf("demo --insecure --mqtt %s: exit %d, stderr %q; want a failure naming loopback and --insecure", addr, code, errb.String())
		}
	}
}

// TestMQTTPasswdLetsTheFleetIn: the password file `telemetry mqtt passwd`
// writes for a fleet lets real Mosquitto, which knows no fleet secret, take
// every device of that fleet, each only as itself; a device credential
// from `telemetry mqtt credential` logs in by hand; one made with another
// secret does not. With --bench-devices, the first devices of the bench's
// fleet get in too, and none beyond them.
func TestMQTTPasswdLetsTheFleetIn(t *testing.T) {
	base := filepath.Join(testharness.RepoRoot(t), "deploy/mosquitto/passwd")
	var out, errb bytes.Buffer
	if code := run([]string{"mqtt", "passwd", "--devices", "6", "--bench-devices", "3", "--base", base}, &out, &errb); code != 0 {
		t.Fatalf("mqtt passwd: exit %d: %s", code, errb.String())
	}
	file := out.Bytes()
	b := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Passwd: file})

	fleet, err := devices.New(devices.Config{Broker: b.URL(), Devices: 6, Rate: 60, Duration: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	if err := fleet.Run(context.Background()); err != nil {
		t.Fatalf("the fleet on Mosquitto with the generated file: %v", err)
	}
	for _, d := range fleet.Sent() {
		if d.LastSeq == 0 || d.Acked != d.LastSeq {
			t.Errorf("device %s: %d of %d readings acknowledged, want every one", d.Device, d.Acked, d.LastSeq)
		}
	}

	login := func(secret, user, id string) error {
		out.Reset()
		if code := run([]string{"mqtt", "credential", "--fleet-secret", secret, user}, &out, &errb); code != 0 {
			t.Fatalf("mqtt credential: exit %d: %s", code, errb.String())
		}
		var u, p string
		if _, err := fmt.Sscanf(out.String(), "user %s\npassword %s\n", &u, &p); err != nil || u != user {
			t.Fatalf("mqtt credential printed %q (%v)", out.String(), err)
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetUsername(u).SetPassword(p).
			SetAutoReconnect(false).SetConnectRetry(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return errors.New("no CONNACK")
		}
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	// The file holds the fleet's devices: th-00001 is us-east's first.
	if err := login(deploy.DemoFleetSecret, "us-east/thermostat/th-00001", "th-00001"); err != nil {
		t.Errorf("a device of the fleet with its credential: %v", err)
	}
	if err := login("another-fleet-secret", "us-east/thermostat/th-00001", "th-00001"); err == nil {
		t.Error("a credential of another fleet secret logged in")
	}
	if err := login(deploy.DemoFleetSecret, "us-east/thermostat/th-99999", "th-99999"); err == nil {
		t.Error("a device not in the file logged in")
	}
	// The bench's fleet of three: one device per region.
	if err := login(deploy.DemoFleetSecret, "ap-south/thermostat/bench-th-00003", "bench-th-00003"); err != nil {
		t.Errorf("the bench's third device with its credential: %v", err)
	}
	if err := login(deploy.DemoFleetSecret, "us-east/vibration/bench-vb-00004", "bench-vb-00004"); err == nil {
		t.Error("the bench's fourth device logged in, beyond --bench-devices 3")
	}
}

// TestMQTTPasswdLetsGatewaysIn: with --gateway, `telemetry mqtt passwd`
// refuses to write a password file without the ACL (Mosquitto would take
// the gateways' logins and drop all their readings), and with --acl-out
// the two files let real Mosquitto take the gateways of the fleet and of
// the bench's, every reading of their devices delivered.
func TestMQTTPasswdLetsGatewaysIn(t *testing.T) {
	base := filepath.Join(testharness.RepoRoot(t), "deploy/mosquitto/passwd")
	var out, errb bytes.Buffer
	if code := run([]string{"mqtt", "passwd", "--devices", "12", "--gateway", "2", "--base", base}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--acl-out") {
		t.Fatalf("mqtt passwd --gateway without --acl-out: exit %d, stderr %q; want a failure naming --acl-out", code, errb.String())
	}
	aclPath := filepath.Join(t.TempDir(), "acl")
	out.Reset()
	if code := run([]string{"mqtt", "passwd", "--devices", "12", "--gateway", "2", "--bench-devices", "9", "--bench-gateway", "3",
		"--base", base, "--acl-out", aclPath}, &out, &errb); code != 0 {
		t.Fatalf("mqtt passwd: exit %d: %s", code, errb.String())
	}
	acl, err := os.ReadFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	b := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Passwd: out.Bytes(), ACL: acl})
	var mu sync.Mutex
	got := map[string]bool{}
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("check").
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("telemetry/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		got[m.Topic()+" "+string(m.Payload())] = true
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing: %v", tok.Error())
	}
	var messages uint64
	for _, c := range []devices.Config{
		{Devices: 12, Gateway: 2, Rate: 120, Duration: time.Second},
		{Devices: 9, Gateway: 3, IDPrefix: bench.DefaultIDPrefix, Rate: 90, Duration: time.Second, Batch: 5},
	} {
		c.Broker = b.URL()
		fleet, err := devices.New(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := fleet.Run(context.Background()); err != nil {
			t.Fatalf("a fleet behind gateways on Mosquitto with the generated files: %v", err)
		}
		s := fleet.Stats()
		if s.Sent == 0 || s.Acked != s.Sent {
			t.Errorf("%s fleet: %d of %d readings acknowledged, want every one", c.IDPrefix, s.Acked, s.Sent)
		}
		messages += s.Messages
	}
	testharness.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if uint64(len(got)) != messages {
			return fmt.Errorf("%d of the gateways' %d messages delivered", len(got), messages)
		}
		return nil
	})
}
