package broker_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

func startWithWebSockets(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	cfg.Listen, cfg.ListenWS = "127.0.0.1:0", "127.0.0.1:0"
	b, err := broker.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func connectURL(url string, c creds, clientID string) (mqtt.Client, error) {
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetUsername(c.user).SetPassword(c.password))
	tok := cl.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("no CONNACK within 15s")
	}
	return cl, tok.Error()
}

// TestWebSocketClientsAreHeldToTheSameRules: over MQTT over WebSocket
// (the listener browsers use), a device logs in with its credential and
// its reading reaches ingest on TCP, and so does a phone with its
// short-lived one; a wrong password, an expired phone credential, a
// permanent password for a phone and a publish on another device's topic
// are refused as on TCP.
func TestWebSocketClientsAreHeldToTheSameRules(t *testing.T) {
	b := startWithWebSockets(t, broker.Config{})
	if !strings.HasPrefix(b.WSURL(), "ws://127.0.0.1:") || !strings.HasSuffix(b.WSURL(), broker.WSPath) {
		t.Fatalf("WSURL %q", b.WSURL())
	}
	got := subscribeAsIngest(t, b.Addr())
	phoneUser := devicecred.Username("us-east", devicecred.PhoneType, "ph-0001")
	key := devicecred.PhoneKey(deploy.DemoFleetSecret)
	phone := creds{phoneUser, devicecred.PhonePassword(key, phoneUser, time.Now(), time.Now().Add(time.Hour))}

	for _, c := range []struct {
		name   string
		c      creds
		id     string
		topic  string
		wantOK bool
	}{
		{"device", device, "th-00001", "telemetry/us-east/thermostat/th-00001", true},
		{"phone", phone, "ph-0001", "telemetry/us-east/phone/ph-0001", true},
		{"device with another device's password", creds{device.user, deviceLogin("thermostat", "th-00002").password}, "th-00001", "", false},
		{"phone with an expired credential", creds{phoneUser, devicecred.PhonePassword(key, phoneUser, time.Now(), time.Now().Add(-time.Second))}, "ph-0001", "", false},
		{"phone with a credential made from the fleet secret itself", creds{phoneUser, devicecred.PhonePassword(deploy.DemoFleetSecret, phoneUser, time.Now(), time.Now().Add(time.Hour))}, "ph-0001", "", false},
		{"phone with a device's permanent password", creds{phoneUser, devicecred.Password(deploy.DemoFleetSecret, phoneUser)}, "ph-0001", "", false},
		{"phone under another phone's client id", phone, "ph-0002", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := connectURL(b.WSURL(), c.c, c.id)
			if !c.wantOK {
				if err == nil {
					cl.Disconnect(50)
					t.Fatalf("logged in over WebSocket as %s", c.c.user)
				}
				return
			}
			if err != nil {
				t.Fatalf("logging in over WebSocket: %v", err)
			}
			defer cl.Disconnect(50)
			if err := publish(cl, c.topic, "over-ws"); err != nil {
				t.Fatalf("publishing on its own topic: %v", err)
			}
			testharness.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
				if !got.has(c.topic + " over-ws") {
					return fmt.Errorf("ingest has not received the reading sent over WebSocket")
				}
				return nil
			})
			// Another device's topic: mochi drops the connection.
			if err := publish(cl, "telemetry/us-east/thermostat/th-00002", "forbidden"); err == nil && cl.IsConnectionOpen() {
				t.Error("a publish on another device's topic over WebSocket was acknowledged")
			}
		})
	}
	if n := b.Refused("bad_login"); n < 4 {
		t.Errorf("%d bad logins counted, want the 4 refused", n)
	}
}

// TestWebSocketListenerRefusesWhatIsNotMQTT: the WebSocket port answers a
// plain HTTP request, another path or bytes that are not HTTP by closing
// (not_websocket), an upgrade that sends no CONNECT within the login
// timeout by closing (login_timeout), and holds one address to the same
// bound of connections as the TCP port, while a client within the
// bounds still gets in.
func TestWebSocketListenerRefusesWhatIsNotMQTT(t *testing.T) {
	b := startWithWebSockets(t, broker.Config{LoginTimeout: 300 * time.Millisecond, MaxConnsPerIP: 3})
	addr := strings.TrimSuffix(strings.TrimPrefix(b.WSURL(), "ws://"), broker.WSPath)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / on the WebSocket port: %s, want 404", resp.Status)
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(raw, "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\r\n\r\n") // a TCP client's CONNECT
	if _, err := bufio.NewReader(raw).ReadByte(); err == nil {
		t.Error("a raw MQTT CONNECT on the WebSocket port got an answer")
	}
	raw.Close()
	testharness.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := b.Refused("not_websocket"); n != 2 {
			return fmt.Errorf("%d refused as not_websocket, want 2", n)
		}
		return nil
	})

	// An upgrade, then nothing: closed at the login timeout.
	silent, _, err := websocket.DefaultDialer.Dial(b.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, _, err := silent.ReadMessage(); err == nil {
		t.Error("a WebSocket that sent no CONNECT got a message")
	}
	testharness.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := b.Refused("login_timeout"); n != 1 {
			return fmt.Errorf("%d refused at the login timeout, want 1", n)
		}
		return nil
	})

	// The bound of connections from one address spans both listeners:
	// a device on TCP, one over WebSocket, one waiting over WebSocket,
	// then the fourth is refused.
	mustConnect(t, b.Addr(), device, "th-00001", nil)
	ws1, err := connectURL(b.WSURL(), deviceLogin("thermostat", "th-00002"), "th-00002")
	if err != nil {
		t.Fatalf("a device over WebSocket within the bounds: %v", err)
	}
	defer ws1.Disconnect(50)
	waiting, _, err := websocket.DefaultDialer.Dial(b.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	if _, err := connectURL(b.WSURL(), deviceLogin("thermostat", "th-00003"), "th-00003"); err == nil {
		t.Error("a fourth connection from one address got in, past MaxConnsPerIP 3")
	}
	if n := b.Refused("too_many_from_address"); n == 0 {
		t.Error("the connection past the bound was not counted")
	}
}
