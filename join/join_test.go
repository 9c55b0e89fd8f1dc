package join_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
)

func wsPort(t *testing.T, b *broker.Broker) int {
	t.Helper()
	u := strings.TrimSuffix(b.WSURL(), broker.WSPath)
	p, err := strconv.Atoi(u[strings.LastIndex(u, ":")+1:])
	if err != nil {
		t.Fatalf("broker WebSocket URL %q: %v", b.WSURL(), err)
	}
	return p
}

// ingest is a subscriber to every reading of the broker at url, as ingest
// subscribes, that keeps what it received.
type ingest struct {
	mu  sync.Mutex
	got map[string]int // by topic and by "topic payload"
}

func listen(t *testing.T, url string) *ingest {
	t.Helper()
	in := &ingest{got: map[string]int{}}
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("ingest-test").
		SetUsername(deploy.MQTTIngestUser).SetPassword(deploy.DemoMQTTIngestPassword))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(50) })
	if tok := cl.Subscribe("telemetry/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		in.mu.Lock()
		in.got[m.Topic()]++
		in.got[m.Topic()+" "+string(m.Payload())]++
		in.mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribing: %v", tok.Error())
	}
	return in
}

// received is how many messages came on topic, or, with a payload, with
// that payload.
func (in *ingest) received(topic string, payload ...string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.got[strings.Join(append([]string{topic}, payload...), " ")]
}

// ticket is the query of a fresh join link of s, as the join view shows
// it: t=<ticket>.
func ticket(t *testing.T, s *join.Service) string {
	t.Helper()
	u, err := url.Parse(s.Link(httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/join/show", nil)))
	if err != nil || u.Path != "/join" || u.Query().Get("t") == "" {
		t.Fatalf("join link %v: %v", u, err)
	}
	return u.RawQuery
}

// do sends a POST from the address from to s and returns the status and,
// on 201, the credential.
func do(t *testing.T, s *join.Service, from string) (int, http.Header, join.Credential) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/join?"+ticket(t, s), nil)
	req.RemoteAddr = from
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var c join.Credential
	if rec.Code == http.StatusCreated {
		if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil {
			t.Fatalf("credential %q: %v", rec.Body.String(), err)
		}
	}
	return rec.Code, rec.Header(), c
}

// TestAJoinedPhoneIsADeviceOfItsOwn: a phone's credential from POST
// /api/join logs in to the broker over WebSocket and publishes a reading
// on its own topic, which ingest receives; the same phone is refused on
// another phone's topic, and a second phone is another device.
func TestAJoinedPhoneIsADeviceOfItsOwn(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", ListenWS: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := join.New(join.Config{PhoneKey: devicecred.PhoneKey(deploy.DemoFleetSecret), Regions: []string{"us-east", "eu-west"}, BrokerWSPort: wsPort(t, b)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := listen(t, b.URL())

	code, _, a := do(t, s, "192.0.2.10:5000")
	code2, _, other := do(t, s, "192.0.2.11:5000")
	if code != http.StatusCreated || code2 != http.StatusCreated {
		t.Fatalf("joins answered %d and %d, want 201", code, code2)
	}
	if a.Device == other.Device || a.Region == other.Region || a.Type != devicecred.PhoneType || !devicecred.IsPhone(a.User) {
		t.Fatalf("two phones %+v and %+v: want two devices of type phone, spread over the regions", a, other)
	}
	if want := "ws://127.0.0.1:" + strconv.Itoa(wsPort(t, b)) + broker.WSPath; a.Broker != want {
		t.Errorf("the phone is sent to %s, want %s (the host it reached the dashboard by)", a.Broker, want)
	}
	if d := time.Until(a.Expires); d < join.DefaultTTL-time.Minute || d > join.DefaultTTL {
		t.Errorf("the credential ends in %v, want about %v", d, join.DefaultTTL)
	}
	phone := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(a.Broker).SetClientID(a.ClientID).
		SetUsername(a.User).SetPassword(a.Password).SetAutoReconnect(false))
	if tok := phone.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone logging in with its credential over WebSocket: %v", tok.Error())
	}
	defer phone.Disconnect(50)
	if tok := phone.Publish(a.Topic, 1, false, "reading"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone publishing on its topic: %v", tok.Error())
	}
	testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if in.received(a.Topic) == 0 {
			return fmt.Errorf("ingest has not received the phone's reading")
		}
		return nil
	})
	tok := phone.Publish(other.Topic, 1, false, "spoofed")
	tok.WaitTimeout(10 * time.Second)
	if tok.Error() == nil && phone.IsConnectionOpen() {
		t.Error("a phone's publish on another phone's topic was acknowledged")
	}
	if in.received(other.Topic) != 0 {
		t.Error("a phone published on another phone's topic")
	}
}

// TestJoiningIsBounded: at most MaxPerAddress phones from one address
// (429) and MaxPhones in all (503), each refusal with a Retry-After and
// counted; once credentials end, phones may join again. A GET is refused.
func TestJoiningIsBounded(t *testing.T) {
	now := time.Unix(1796600000, 0)
	s, err := join.New(join.Config{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083,
		MaxPhones: 3, MaxPerAddress: 2, TTL: 10 * time.Minute, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		from string
		want int
	}{
		{"192.0.2.1:1", http.StatusCreated},
		{"192.0.2.1:2", http.StatusCreated},
		{"192.0.2.1:3", http.StatusTooManyRequests},
		{"192.0.2.2:1", http.StatusCreated},
		{"192.0.2.3:1", http.StatusServiceUnavailable},
	} {
		code, h, _ := do(t, s, c.from)
		if code != c.want {
			t.Errorf("join %d from %s: %d, want %d", i+1, c.from, code, c.want)
		}
		if code != http.StatusCreated && h.Get("Retry-After") == "" {
			t.Errorf("join %d refused without Retry-After", i+1)
		}
	}
	if s.Phones() != 3 || s.Refused("full") != 1 || s.Refused("too_many_from_address") != 1 {
		t.Errorf("%d phones, refused %d full and %d from one address: want 3, 1 and 1", s.Phones(), s.Refused("full"), s.Refused("too_many_from_address"))
	}
	now = now.Add(10 * time.Minute)
	if code, _, _ := do(t, s, "192.0.2.3:1"); code != http.StatusCreated || s.Phones() != 1 {
		t.Errorf("after the credentials ended: %d with %d phones, want 201 and 1", code, s.Phones())
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/join", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/join: %d, want 405", rec.Code)
	}
	for _, bad := range []join.Config{
		{Regions: []string{"us-east"}, BrokerWSPort: 8083},
		{PhoneKey: "k", BrokerWSPort: 8083},
		{PhoneKey: "k", Regions: []string{"us-east"}},
		{PhoneKey: "k", Regions: []string{"US"}, BrokerWSPort: 8083},
		{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, TTL: 48 * time.Hour},
		{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, LinkTTL: time.Second},
		{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, PresenterToken: "a-token-without-a-broker"},
	} {
		if _, err := join.New(bad, nil); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

// askedTracer answers every trace with an empty journey and keeps the
// topics it was asked for.
type askedTracer struct{ asked []protocol.Topic }

func (a *askedTracer) Trace(_ context.Context, t protocol.Topic) (join.Journey, error) {
	a.asked = append(a.asked, t)
	return join.Journey{Device: t.Device, Seq: 1}, nil
}

// TestAPhoneSeesOnlyItsOwnJourney: GET /api/journey answers a phone's own
// login with its own reading's journey, and refuses no login, another
// phone's user name with this phone's password, a device's permanent
// password and a credential past its end.
func TestAPhoneSeesOnlyItsOwnJourney(t *testing.T) {
	now := time.Unix(1796600000, 0)
	tracer := &askedTracer{}
	key := devicecred.PhoneKey(deploy.DemoFleetSecret)
	s, err := join.New(join.Config{PhoneKey: key, Regions: []string{"us-east"}, BrokerWSPort: 8083, Tracer: tracer,
		Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, c := do(t, s, "192.0.2.1:1")
	other := devicecred.Username("us-east", devicecred.PhoneType, "ph-00000000")
	get := func(user, password string) int {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/journey", nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, bad := range []struct{ name, user, password string }{
		{"no login", "", ""},
		{"another phone's name", other, c.Password},
		{"a device's permanent password", c.User, devicecred.Password(deploy.DemoFleetSecret, c.User)},
	} {
		if code := get(bad.user, bad.password); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", bad.name, code)
		}
	}
	if code := get(c.User, c.Password); code != http.StatusOK {
		t.Fatalf("the phone's own login: %d, want 200", code)
	}
	if len(tracer.asked) != 1 || tracer.asked[0].Device != c.Device || tracer.asked[0].DeviceType != devicecred.PhoneType {
		t.Errorf("traced %+v, want only the phone's own topic", tracer.asked)
	}
	now = c.Expires
	if code := get(c.User, c.Password); code != http.StatusUnauthorized {
		t.Errorf("a credential at its end: %d, want 401", code)
	}
}
