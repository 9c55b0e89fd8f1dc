package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/stream"
)

const testToken = "presenter-token-for-tests"

// echo is a TCP server that sends back every line it gets.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip dials addr and sends a line; nil when it comes back.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("got %q back", line)
	}
	return nil
}

// relayRig is a relay with one link "db" in front of an echo server,
// taking requests on an embedded region's NATS as the relay user.
type relayRig struct {
	relay *Relay
	addr  string // the link's address
	e     *stream.Embedded
}

func startRelay(t *testing.T, token string) *relayRig {
	t.Helper()
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{Regions: stream.DefaultRegions, DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	r, err := NewRelay(RelayConfig{Links: []LinkSpec{{Name: "db", Listen: "127.0.0.1:0", Target: echo(t)}},
		NATSURL: e.URLAs("us-east", "relay"), Token: token}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testharness.CheckFor(t, 5*time.Second, 20*time.Millisecond, r.Ready)
	return &relayRig{relay: r, addr: r.links["db"].Addr(), e: e}
}

// ask sends m as user from region us-east and returns the relay's reply.
func (rig *relayRig) ask(t *testing.T, user string, m *nats.Msg) (Reply, error) {
	t.Helper()
	nc := testharness.Connect(t, rig.e.URLAs("us-east", user))
	resp, err := nc.RequestMsg(m, 2*time.Second)
	if err != nil {
		return Reply{}, err
	}
	var reply Reply
	if err := json.Unmarshal(resp.Data, &reply); err != nil {
		t.Fatalf("the relay's answer %q: %v", resp.Data, err)
	}
	return reply, nil
}

func signed(t *testing.T, token string, req Request, at time.Time) *nats.Msg {
	t.Helper()
	m, err := newMsg(token, req, at)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRelayCutsAndHealsOnASignedRequest: the relay relays; a request
// signed with the presenter token cuts the link (an open connection is
// dropped, a new one gets nothing through) and another heals it; a cut
// heals by itself once its window has passed.
func TestRelayCutsAndHealsOnASignedRequest(t *testing.T) {
	rig := startRelay(t, testToken)
	if err := roundTrip(rig.addr); err != nil {
		t.Fatalf("through the link before any request: %v", err)
	}
	open, err := net.Dial("tcp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	if reply, err := rig.ask(t, "dashboard", signed(t, testToken, Request{Action: ActionCut, Link: "db", WindowMS: time.Minute.Milliseconds()}, time.Now())); err != nil || !reply.OK {
		t.Fatalf("cut: %+v %v", reply, err)
	}
	open.SetReadDeadline(time.Now().Add(2 * time.Second))
	var timeout net.Error
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.As(err, &timeout) && timeout.Timeout() {
		t.Errorf("a connection open before the cut: read %v, want it closed", err)
	}
	if err := roundTrip(rig.addr); err == nil {
		t.Error("a new connection got through the cut link")
	}
	if reply, err := rig.ask(t, "dashboard", signed(t, testToken, Request{Action: ActionHeal, Link: "db"}, time.Now())); err != nil || !reply.OK {
		t.Fatalf("heal: %+v %v", reply, err)
	}
	if err := roundTrip(rig.addr); err != nil {
		t.Errorf("through the healed link: %v", err)
	}

	// No heal request: the window ends the cut.
	if reply, err := rig.ask(t, "dashboard", signed(t, testToken, Request{Action: ActionCut, Link: "db", WindowMS: 300}, time.Now())); err != nil || !reply.OK {
		t.Fatalf("cut for 300 ms: %+v %v", reply, err)
	}
	if err := roundTrip(rig.addr); err == nil {
		t.Error("a new connection got through the cut link")
	}
	testharness.CheckFor(t, 3*time.Second, 50*time.Millisecond, func() error { return roundTrip(rig.addr) })
}

// TestRelayRefusesWhatIsNotSigned is the attacker's side: whoever can
// publish to the relay's subject without the presenter token (an
// unsigned request, one signed with another token, a signed one replayed
// or kept for later, a request for no such link) is refused with the
// reason and counted, and the link keeps relaying; NATS itself keeps every
// user but the dashboard from publishing there and the relay user from
// publishing anything; a relay without a token refuses everything.
func TestRelayRefusesWhatIsNotSigned(t *testing.T) {
	rig := startRelay(t, testToken)
	cut := Request{Action: ActionCut, Link: "db", WindowMS: time.Minute.Milliseconds()}

	unsigned := signed(t, testToken, cut, time.Now())
	unsigned.Header.Del(SignatureHeader)
	replayed := signed(t, testToken, Request{Action: ActionHeal, Link: "db"}, time.Now())
	if reply, err := rig.ask(t, "dashboard", replayed); err != nil || !reply.OK {
		t.Fatalf("a signed heal: %+v %v", reply, err)
	}
	for _, c := range []struct {
		name   string
		m      *nats.Msg
		reason string
	}{
		{"unsigned", unsigned, "bad_signature"},
		{"signed with another token", signed(t, "not-the-token", cut, time.Now()), "bad_signature"},
		{"replayed", replayed, "replayed"},
		{"a minute old", signed(t, testToken, cut, time.Now().Add(-time.Minute)), "stale"},
		{"no such link", signed(t, testToken, Request{Action: ActionCut, Link: "other"}, time.Now()), "unknown_link"},
	} {
		before := rig.relay.refused.Count(c.reason)
		reply, err := rig.ask(t, "dashboard", c.m)
		if err != nil || reply.OK {
			t.Errorf("%s: %+v %v, want a refusal", c.name, reply, err)
		}
		if got := rig.relay.refused.Count(c.reason); got != before+1 {
			t.Errorf("%s: telemetry_relay_refused_total{reason=%q} %d, want %d", c.name, c.reason, got, before+1)
		}
		if err := roundTrip(rig.addr); err != nil {
			t.Errorf("after the %s request the link does not relay: %v", c.name, err)
		}
	}

	// NATS: storage and ingest may not even publish the request; the
	// relay user may publish nothing but its answers.
	for _, user := range []string{"storage", stream.IngestUser("us-east")} {
		errs := make(chan error, 1)
		nc, err := nats.Connect(rig.e.URLAs("us-east", user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = nc.RequestMsg(signed(t, testToken, cut, time.Now()), time.Second)
		nc.Close()
		if err == nil {
			t.Errorf("%s's request reached the relay", user)
		}
		select {
		case err := <-errs:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Errorf("%s publishing to %s: %v, want a permissions violation", user, RelaySubject, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%s publishing to %s: no permissions violation reported", user, RelaySubject)
		}
	}
	relayUser := testharness.Connect(t, rig.e.URLAs("us-east", "relay"))
	errs := make(chan error, 1)
	relayUser.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	if err := relayUser.Publish("telemetry.us-east.probe.x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("relay publishing a reading: %v, want a permissions violation", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("relay publishing a reading: no permissions violation reported")
	}

	off := startRelay(t, "")
	if reply, err := off.ask(t, "dashboard", signed(t, testToken, cut, time.Now())); err != nil || reply.OK || reply.Error != errNoToken.Error() {
		t.Errorf("a relay without a token: %+v %v, want %q", reply, err, errNoToken)
	}
	if err := roundTrip(off.addr); err != nil {
		t.Errorf("a relay without a token does not relay: %v", err)
	}
}
