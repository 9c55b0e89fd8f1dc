package join_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
)

// TestPhonesOnMosquitto: with Mosquitto as the broker, each phone that
// joins becomes a client of its dynamic security plugin. The phone logs in
// over WebSocket and publishes on its own topic, which ingest (a user of
// the password file) receives; it is refused on another phone's topic, in
// a subscription, with another phone's name, and with a device's
// permanent password. Removing the phones disconnects them and their
// logins stop working, while a phone joined afterwards works; a phone
// whose credential ended is deleted, and so are the phones an earlier run
// left in the plugin.
func TestPhonesOnMosquitto(t *testing.T) {
	const admin, adminPassword, token = "join", "dynsec-admin-password-of-the-test", "presenter-token-of-the-test"
	conf, err := broker.DynsecConfig(admin, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	b := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Dynsec: conf})
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	dcfg := join.DynsecConfig{URL: b.ServiceURL(), User: admin, Password: adminPassword, ReapEvery: 50 * time.Millisecond, Now: now}
	d, err := join.NewDynsec(dcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	s, err := join.New(join.Config{PhoneKey: devicecred.PhoneKey(deploy.DemoFleetSecret), Regions: []string{"us-east", "eu-west"},
		BrokerWSPort: b.WSPort(), Broker: d, PresenterToken: token}, nil)
	if err != nil {
		t.Fatal(err)
	}

	in := listen(t, b.ServiceURL())
	login := func(user, password string) (mqtt.Client, error) {
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.WSURL()).SetClientID(user).
			SetUsername(user).SetPassword(password).SetAutoReconnect(false).SetConnectRetry(false))
		tok := cl.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return cl, tok.Error()
	}
	publishes := func(cl mqtt.Client, c join.Credential, payload string) {
		t.Helper()
		if tok := cl.Publish(c.Topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s publishing on its topic: %v", c.Device, tok.Error())
		}
		testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if in.received(c.Topic, payload) == 0 {
				return fmt.Errorf("ingest has not received %s's %q", c.Device, payload)
			}
			return nil
		})
	}
	refused := func(what, user, password string) {
		t.Helper()
		if cl, err := login(user, password); err == nil {
			cl.Disconnect(50)
			t.Errorf("%s: logged in to Mosquitto", what)
		}
	}
	join1 := func(from string) join.Credential {
		t.Helper()
		code, _, c := do(t, s, from)
		if code != http.StatusCreated {
			t.Fatalf("joining: %d, want 201", code)
		}
		return c
	}

	a, other := join1("192.0.2.10:1"), join1("192.0.2.11:1")
	phone, err := login(a.User, a.Password)
	if err != nil {
		t.Fatalf("the phone logging in to Mosquitto over WebSocket: %v", err)
	}
	defer phone.Disconnect(50)
	publishes(phone, a, "own")

	// Mosquitto acknowledges a denied QoS 1 publish and drops it: the
	// phone's next reading on its own topic shows that the spoof did not
	// come before it.
	if tok := phone.Publish(other.Topic, 1, false, "spoofed"); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("no answer to the spoofed publish")
	}
	publishes(phone, a, "after the spoof")
	if in.received(other.Topic, "spoofed") != 0 {
		t.Error("a phone published on another phone's topic on Mosquitto")
	}
	// A phone reads nothing: Mosquitto 2.0.11 grants the subscription,
	// and its plugin then delivers nothing on it (publishClientReceive
	// is denied to its clients by default), not even the phone's own.
	var read atomic.Int64
	if tok := phone.Subscribe("telemetry/#", 1, func(mqtt.Client, mqtt.Message) { read.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("no SUBACK: %v", tok.Error())
	}
	publishes(phone, a, "after subscribing")
	publishes(phone, a, "a sentinel")
	if n := read.Load(); n != 0 {
		t.Errorf("a phone read %d messages on Mosquitto, want none", n)
	}
	refused("another phone's name with this phone's password", other.User, a.Password)
	refused("a device's permanent password for the phone's name", a.User, devicecred.Password(deploy.DemoFleetSecret, a.User))

	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/join/remove", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Body.String() != "{\"phones\":2,\"disconnected\":2}\n" {
		t.Fatalf("removing the phones: %d %s, want 200 with 2 phones removed", rec.Code, rec.Body.String())
	}
	testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if phone.IsConnectionOpen() {
			return fmt.Errorf("the removed phone is still connected to Mosquitto")
		}
		return nil
	})
	refused("a removed phone", a.User, a.Password)
	refused("another removed phone", other.User, other.Password)

	back := join1("192.0.2.10:2")
	cl, err := login(back.User, back.Password)
	if err != nil {
		t.Fatalf("a phone joined after the removal logging in: %v", err)
	}
	publishes(cl, back, "back")
	cl.Disconnect(50)

	// Its credential ends: the reaper deletes it from Mosquitto.
	clock.Store(back.Expires.UnixMilli())
	testharness.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if cl, err := login(back.User, back.Password); err == nil {
			cl.Disconnect(50)
			return fmt.Errorf("a phone logs in to Mosquitto at its credential's end")
		}
		return nil
	})

	// A phone admitted by a run that ended is deleted by the next.
	clock.Store(time.Now().UnixMilli())
	last := join1("192.0.2.12:1")
	d.Close()
	if cl, err := login(last.User, last.Password); err != nil {
		t.Fatalf("a phone of a run that ended, before the next starts: %v", err)
	} else {
		cl.Disconnect(50)
	}
	d2, err := join.NewDynsec(dcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	refused("a phone an earlier run left in Mosquitto", last.User, last.Password)
}

// TestTheJoinUserOnlyManagesPhones: on Mosquitto the dashboard's join user
// may send the dynamic security plugin its commands, and nothing else: it
// reads no reading, publishes none, and does not log in with another
// password; beside that it still makes a phone that logs in.
func TestTheJoinUserOnlyManagesPhones(t *testing.T) {
	const admin, adminPassword = "join", "dynsec-admin-password-of-the-test"
	conf, err := broker.DynsecConfig(admin, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	device := devicecred.Username("us-east", "thermostat", "th-00001")
	b := testharness.MosquittoBrokerWith(t, testharness.MosquittoOptions{Dynsec: conf, Devices: []string{device}})
	in := listen(t, b.ServiceURL())

	connect := func(user, password string) (mqtt.Client, error) {
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.ServiceURL()).SetClientID(user + "-test").
			SetUsername(user).SetPassword(password).SetAutoReconnect(false))
		tok := cl.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return cl, tok.Error()
	}
	if cl, err := connect(admin, "not-its-password"); err == nil {
		cl.Disconnect(50)
		t.Error("the join user logged in with another password")
	}
	cl, err := connect(admin, adminPassword)
	if err != nil {
		t.Fatalf("the join user logging in: %v", err)
	}
	defer cl.Disconnect(50)
	var read atomic.Int64
	if tok := cl.Subscribe("telemetry/#", 1, func(mqtt.Client, mqtt.Message) { read.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("no SUBACK: %v", tok.Error())
	}
	topic := "telemetry/" + device
	if tok := cl.Publish(topic, 1, false, "from join"); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("no answer to the join user's publish")
	}
	// The device's own reading, after both: ingest receives it, the join
	// user does not, and nothing the join user sent came before it.
	user, password := testharness.DeviceLogin("us-east", "thermostat", "th-00001")
	dev := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("th-00001").
		SetUsername(user).SetPassword(password).SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the device logging in: %v", tok.Error())
	}
	defer dev.Disconnect(50)
	if tok := dev.Publish(topic, 1, false, "from the device"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the device publishing: %v", tok.Error())
	}
	testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if in.received(topic, "from the device") == 0 {
			return fmt.Errorf("ingest has not received the device's reading")
		}
		return nil
	})
	if n := in.received(topic, "from join"); n != 0 {
		t.Errorf("the join user published %d readings on a device's topic", n)
	}
	if n := read.Load(); n != 0 {
		t.Errorf("the join user read %d readings", n)
	}

	// Its own job.
	d, err := join.NewDynsec(join.DynsecConfig{URL: b.ServiceURL(), User: admin, Password: adminPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	phone := devicecred.Username("us-east", devicecred.PhoneType, "ph-00000001")
	c := join.Credential{User: phone, Password: "a-phone-password", Topic: "telemetry/" + phone, Issued: time.Now(), Expires: time.Now().Add(time.Hour)}
	if err := d.Admit(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	pc := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.WSURL()).SetClientID(phone).
		SetUsername(phone).SetPassword(c.Password).SetAutoReconnect(false))
	if tok := pc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone the join user made logging in: %v", tok.Error())
	}
	pc.Disconnect(50)
}
