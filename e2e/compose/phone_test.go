package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/storage"
)

// phoneJoins is a phone on the stack: it opens the join link the join
// view shows, joins, logs in to Mosquitto over WebSocket as a client of
// its dynamic security plugin, and publishes a reading twice and a spoof
// on another phone's topic. ClickHouse holds the reading once and nothing
// of the spoof, the phone's journey reaches ClickHouse, and the
// presenter's "remove all phones" disconnects it.
func phoneJoins(t *testing.T) {
	const dash = "http://127.0.0.1:8080"
	resp, err := http.Get(dash + "/join/show")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`id="join-link">([^<]+)<`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("the join view: %s without a link", resp.Status)
	}
	link, err := url.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		t.Fatal(err)
	}
	join1 := func() join.Credential {
		resp, err := http.Post(dash+"/api/join?"+link.RawQuery, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c join.Credential
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST /api/join: %s (%v)", resp.Status, err)
		}
		return c
	}
	c, other := join1(), join1()
	if c.Broker != "ws://127.0.0.1:8083/mqtt" {
		t.Errorf("the phone is sent to %s, want Mosquitto's WebSocket listener ws://127.0.0.1:8083/mqtt", c.Broker)
	}
	phone := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).
		SetUsername(c.User).SetPassword(c.Password).SetAutoReconnect(false))
	if tok := phone.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone logging in to Mosquitto at %s: %v", c.Broker, tok.Error())
	}
	defer phone.Disconnect(50)
	publish := func(topic, payload string) {
		if tok := phone.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("the phone publishing: %v", tok.Error())
		}
	}
	reading := func(device string) string {
		return fmt.Sprintf(`{"v":1,"device":%q,"boot":1,"seq":1,"ts":%d,"metrics":{"tilt_front_deg":12.5}}`, device, time.Now().UnixMilli())
	}
	publish(other.Topic, reading(other.Device)) // refused by Mosquitto, acknowledged and dropped
	publish(c.Topic, reading(c.Device))
	publish(c.Topic, reading(c.Device)) // sent twice, stored once

	conn, err := storage.DialHistory(storage.Config{ClickHouseAddr: "127.0.0.1:9000"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testharness.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		var mine, spoofed uint64
		err := conn.QueryRow(context.Background(), `SELECT countIf(device = ?), countIf(device = ?) FROM telemetry.readings FINAL WHERE device_type = 'phone'`,
			c.Device, other.Device).Scan(&mine, &spoofed)
		if err != nil || mine != 1 || spoofed != 0 {
			return fmt.Errorf("ClickHouse holds %d rows of the phone and %d of the one it spoofed, want 1 and 0 (%v)", mine, spoofed, err)
		}
		return nil
	})
	testharness.CheckFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		req, _ := http.NewRequest(http.MethodGet, dash+"/api/journey", nil)
		req.SetBasicAuth(c.User, c.Password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var j join.Journey
		if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
			return fmt.Errorf("the journey: %s (%v)", resp.Status, err)
		}
		var open []string
		for _, h := range j.Hops {
			if h.At == nil {
				open = append(open, h.Name)
			}
		}
		if len(j.Hops) != 4 || len(open) > 0 {
			return fmt.Errorf("the journey has %d hops, open: %s; want 4 (JetStream, two copies, ClickHouse), all done", len(j.Hops), strings.Join(open, ", "))
		}
		return nil
	})

	req, _ := http.NewRequest(http.MethodPost, dash+"/api/join/remove", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var removed join.Removed
	err = json.NewDecoder(resp.Body).Decode(&removed)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || removed.Phones != 2 || removed.Disconnected != 2 {
		t.Fatalf("removing the phones: %s %+v (%v), want both removed", resp.Status, removed, err)
	}
	testharness.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if phone.IsConnectionOpen() {
			return fmt.Errorf("the removed phone is still connected to Mosquitto")
		}
		return nil
	})
}
