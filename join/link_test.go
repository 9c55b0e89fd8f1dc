package join_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
)

// TestAnExpiredJoinLinkGetsAClearPage: a join link lets phones in until
// its end; after it, and for a link that was tampered with or is missing,
// the phone's page is a 410 page that says to scan the code on the
// screen again (no error text of the server's), and POST /api/join is
// refused the same way.
func TestAnExpiredJoinLinkGetsAClearPage(t *testing.T) {
	now := time.Unix(1796600000, 0)
	s, err := join.New(join.Config{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083,
		LinkTTL: 10 * time.Minute, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	query := ticket(t, s)
	page := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		s.Page().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080"+path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := page("/join?" + query); code != http.StatusOK || !strings.Contains(body, "Your phone is a device") {
		t.Fatalf("a fresh link: %d, want 200 and the phone's page", code)
	}
	if code, _, _ := do(t, s, "192.0.2.1:1"); code != http.StatusCreated {
		t.Fatalf("joining through a fresh link: %d, want 201", code)
	}
	expired := func(name, path string) {
		t.Helper()
		code, body := page(path)
		if code != http.StatusGone || !strings.Contains(body, `id="join-expired"`) || !strings.Contains(body, "Scan the QR code on the screen again") {
			t.Errorf("%s: %d %q, want 410 and the page saying to scan the code again", name, code, body)
		}
		for _, leak := range []string{"goroutine", "panic", ".go:", "ticket"} {
			if strings.Contains(body, leak) {
				t.Errorf("%s: the page shows %q", name, leak)
			}
		}
	}
	expired("no link", "/join")
	expired("a link tampered with", "/join?"+strings.Replace(query, ".", ".9", 1))
	now = now.Add(10 * time.Minute)
	expired("a link at its end", "/join?"+query)
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/join?"+query, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), "Scan the QR code on the screen again") {
		t.Errorf("POST /api/join through an expired link: %d %q, want 410 saying to scan again", rec.Code, rec.Body.String())
	}
	if code, _ := page("/join?" + ticket(t, s)); code != http.StatusOK {
		t.Errorf("a link made after the old one expired: %d, want 200", code)
	}
}

// TestThePresenterRemovesAllPhones: POST /api/join/remove with the
// presenter's token disconnects the phones from the broker, which then
// refuses their credentials, ends their journeys, and withdraws the join
// links made before; a phone that joins through a fresh link is a device
// again. Without the token, or with another, nothing is removed.
func TestThePresenterRemovesAllPhones(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", ListenWS: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const token = "presenter-token-of-the-test"
	s, err := join.New(join.Config{PhoneKey: devicecred.PhoneKey(deploy.DemoFleetSecret), Regions: []string{"us-east"},
		BrokerWSPort: wsPort(t, b), Broker: join.Embedded(b), PresenterToken: token, Tracer: &askedTracer{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := listen(t, b.URL())
	login := func(c join.Credential) (mqtt.Client, error) {
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).
			SetUsername(c.User).SetPassword(c.Password).SetAutoReconnect(false))
		tok := cl.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return cl, tok.Error()
	}
	publish := func(cl mqtt.Client, c join.Credential) {
		t.Helper()
		before := in.received(c.Topic)
		if tok := cl.Publish(c.Topic, 1, false, "reading"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s publishing on its topic: %v", c.Device, tok.Error())
		}
		testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if in.received(c.Topic) == before {
				return fmt.Errorf("ingest has not received %s's reading", c.Device)
			}
			return nil
		})
	}
	journey := func(c join.Credential) int {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/journey", nil)
		req.SetBasicAuth(c.User, c.Password)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	remove := func(auth string) (int, join.Removed) {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/join/remove", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var r join.Removed
		_ = json.Unmarshal(rec.Body.Bytes(), &r)
		return rec.Code, r
	}

	oldLink := ticket(t, s)
	code, _, a := do(t, s, "192.0.2.10:5000")
	if code != http.StatusCreated {
		t.Fatalf("joining: %d", code)
	}
	phone, err := login(a)
	if err != nil {
		t.Fatalf("the phone logging in: %v", err)
	}
	defer phone.Disconnect(50)
	publish(phone, a)

	for _, auth := range []string{"", "Bearer not-the-token", "Basic " + token} {
		if code, _ := remove(auth); code != http.StatusUnauthorized {
			t.Errorf("removing the phones with Authorization %q: %d, want 401", auth, code)
		}
	}
	if !phone.IsConnectionOpen() || journey(a) != http.StatusOK {
		t.Fatal("a refused removal removed the phone")
	}
	code, r := remove("Bearer " + token)
	if code != http.StatusOK || r.Phones != 1 || r.Disconnected != 1 {
		t.Fatalf("removing the phones: %d %+v, want 200, 1 credential ended and 1 phone disconnected", code, r)
	}
	testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if phone.IsConnectionOpen() {
			return fmt.Errorf("the removed phone is still connected")
		}
		return nil
	})
	if _, err := login(a); err == nil {
		t.Error("the removed phone's credential logs in again")
	}
	if code := journey(a); code != http.StatusUnauthorized {
		t.Errorf("the removed phone's journey: %d, want 401", code)
	}
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/join?"+oldLink, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusGone {
		t.Errorf("joining through a link shown before the removal: %d, want 410", rec.Code)
	}
	if s.Phones() != 0 {
		t.Errorf("%d phones hold a credential after the removal, want 0", s.Phones())
	}

	code, _, again := do(t, s, "192.0.2.10:5001")
	if code != http.StatusCreated {
		t.Fatalf("joining through a fresh link after the removal: %d, want 201", code)
	}
	back, err := login(again)
	if err != nil {
		t.Fatalf("a phone joined after the removal logging in: %v", err)
	}
	defer back.Disconnect(50)
	publish(back, again)
}
