package testharness

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
)

func TestRewriteMosquittoConf(t *testing.T) {
	ports := map[int]int{1883: 40001, 9001: 40002}
	tests := []struct {
		name    string
		conf    string
		root    bool
		files   mosquittoFiles
		want    []string // lines that must be there
		notWant []string
		wantErr string
	}{
		{
			name: "listener, persistence and log moved",
			conf: "# comment\nlistener 1883\nallow_anonymous true\npersistence true\npersistence_location /mosquitto/data/\nlog_dest stdout\nlog_dest file /mosquitto/log/x.log\nmax_queued_messages 5\n",
			want: []string{"# comment", "listener 40001 127.0.0.1", "allow_anonymous true", "persistence true",
				"persistence_location /tmp/d/", "log_dest file /tmp/m.log", "max_queued_messages 5"},
			notWant: []string{"listener 1883", "/mosquitto/", "log_dest stdout", "user "},
		},
		{
			name:    "bind address replaced, second listener moved",
			conf:    "listener 1883 0.0.0.0\nlistener 9001\nprotocol websockets\n",
			want:    []string{"listener 40001 127.0.0.1", "listener 40002 127.0.0.1", "protocol websockets", "persistence_location /tmp/d/", "log_dest file /tmp/m.log"},
			notWant: []string{"0.0.0.0"},
		},
		{
			name:    "root keeps root",
			conf:    "listener 1883\nuser mosquitto\n",
			root:    true,
			want:    []string{"user "},
			notWant: []string{"user mosquitto"},
		},
		{
			name:    "password and ACL files from the repository",
			conf:    "listener 1883\nallow_anonymous false\npassword_file /mosquitto/config/passwd\nacl_file /mosquitto/config/acl\n",
			files:   mosquittoFiles{confDir: "/repo/deploy/mosquitto"},
			want:    []string{"allow_anonymous false", "password_file /repo/deploy/mosquitto/passwd", "acl_file /repo/deploy/mosquitto/acl"},
			notWant: []string{"/mosquitto/config"},
		},
		{
			name:    "password file replaced",
			conf:    "listener 1883\npassword_file /mosquitto/config/passwd\nacl_file /mosquitto/config/acl\n",
			files:   mosquittoFiles{confDir: "/repo/deploy/mosquitto", passwd: "/tmp/x/passwd"},
			want:    []string{"password_file /tmp/x/passwd", "acl_file /repo/deploy/mosquitto/acl"},
			notWant: []string{"/mosquitto/config"},
		},
		{
			name:    "open: anonymous, no password file, no ACL",
			conf:    "listener 1883\nallow_anonymous false\npassword_file /mosquitto/config/passwd\nacl_file /mosquitto/config/acl\n",
			files:   mosquittoFiles{confDir: "/repo/deploy/mosquitto", open: true},
			want:    []string{"allow_anonymous true"},
			notWant: []string{"password_file", "acl_file", "allow_anonymous false"},
		},
		{name: "no MQTT listener", conf: "listener 9001\n", wantErr: "1883"},
		{name: "legacy port option", conf: "port 1883\n", wantErr: "use listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, addr, err := rewriteMosquittoConf([]byte(tt.conf), ports, "/tmp/d", "/tmp/m.log", tt.files, tt.root)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != "127.0.0.1:40001" {
				t.Errorf("addr = %q, want 127.0.0.1:40001", addr)
			}
			lines := strings.Split(string(out), "\n")
			for _, w := range tt.want {
				if !hasLinePrefix(lines, w) {
					t.Errorf("no line %q in\n%s", w, out)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(string(out), nw) {
					t.Errorf("%q still in\n%s", nw, out)
				}
			}
		})
	}
}

func hasLinePrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestMosquittoKeepsQueuedQoS1 checks the harness (start, restart, kill) and
// the repository's configuration together: a persistent QoS 1 subscriber
// that is away gets every message published meanwhile, more than
// Mosquitto's default queue of 1000 holds, across a clean restart of the
// broker.
func TestMosquittoKeepsQueuedQoS1(t *testing.T) {
	const device = "dev-1"
	const topic, n = "telemetry/us-east/th/" + device, 3000
	user, password := DeviceLogin("us-east", "th", device)
	b := MosquittoBrokerWith(t, MosquittoOptions{Devices: []string{user}})

	var mu sync.Mutex
	got := map[string]bool{}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		got[string(m.Payload())] = true
		mu.Unlock()
	}
	sub := mqttClient(t, b.URL(), ingestUser, "sub", false, handler)
	if tok := sub.Subscribe(topic, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing: %v", tok.Error())
	}
	sub.Disconnect(250)

	pub := mqttClient(t, b.URL(), [2]string{user, password}, device, true, nil)
	var last mqtt.Token
	for i := range n {
		last = pub.Publish(topic, 1, false, fmt.Sprint(i))
	}
	if !last.WaitTimeout(30*time.Second) || last.Error() != nil {
		t.Fatalf("publishing: %v", last.Error())
	}
	pub.Disconnect(250)

	if err := b.Restart(); err != nil {
		t.Fatalf("restarting: %v", err)
	}

	sub = mqttClient(t, b.URL(), ingestUser, "sub", false, handler)
	CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < n {
			return fmt.Errorf("subscriber got %d of %d queued messages", len(got), n)
		}
		return nil
	})
	sub.Disconnect(250)

	b.Kill()
	if err := mqttConnect(b.URL()); err == nil {
		t.Fatal("broker still accepts MQTT connections after Kill")
	}
	if err := b.Restart(); err != nil {
		t.Fatalf("restarting after kill: %v", err)
	}
}

// ingest's user of deploy/mosquitto/passwd, with its demo password.
var ingestUser = [2]string{deploy.MQTTIngestUser, deploy.DemoMQTTIngestPassword}

func mqttClient(t *testing.T, url string, user [2]string, id string, clean bool, h mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetUsername(user[0]).SetPassword(user[1]).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetDefaultPublishHandler(h).SetMaxResumePubInFlight(100)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connecting %s: %v", id, tok.Error())
	}
	return c
}
