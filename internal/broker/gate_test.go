package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// idleDeadline is how long an idle connection may stay open in these
// tests: the login timeout and a second for the scheduler.
func idleDeadline(timeout time.Duration) time.Duration { return timeout + time.Second }

// TestIdleConnectionsAreClosedAtTheLoginDeadline: connections that never
// send a CONNECT, from one address, are refused beyond the per-address
// bound at once and closed at the login deadline otherwise, each costing
// little memory while open; a CONNECT that declares too much is refused,
// one that trickles is closed at the deadline; meanwhile a device's
// readings reach ingest, every one.
func TestIdleConnectionsAreClosedAtTheLoginDeadline(t *testing.T) {
	const (
		timeout  = 2 * time.Second
		perIP    = 400
		idle     = 600
		readings = 200
	)
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", LoginTimeout: timeout, MaxLoggingInPerIP: perIP},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := subscribeAsIngest(t, b.Addr())
	dev := mustConnect(t, b.Addr(), device, "th-00001", nil)

	// A CONNECT that trickles and one that declares 255 MiB, then the
	// idle connections: held takes the address to its bound.
	trickle := trickleConnect(t, b.Addr(), 100)
	huge := declareConnect(t, b.Addr(), 255<<20)
	const held = perIP - 1

	before := testharness.MemInUse()
	opened := time.Now()
	conns := make([]net.Conn, 0, idle)
	for range idle {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}

	// The device publishes through the flood.
	published := make(chan error, 1)
	go func() {
		for i := range readings {
			if err := publish(dev, "telemetry/us-east/thermostat/th-00001", fmt.Sprintf("reading-%d", i)); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()

	// While the bound's worth are open (the rest refused), they cost
	// little each: a goroutine and a few bytes.
	testharness.CheckFor(t, timeout/2, 10*time.Millisecond, func() error {
		if n := b.Refused("too_many_logging_in_from_address"); n < idle-held {
			return fmt.Errorf("%d connections refused so far, want %d", n, idle-held)
		}
		return nil
	})
	perConn := (testharness.MemInUse() - before) / held

	// Those beyond the per-address bound are closed at once: each read
	// ends well before the login timeout.
	var early, atDeadline atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(idleDeadline(timeout)))
			_, err := c.Read(make([]byte, 1))
			switch {
			case errors.Is(err, io.EOF) || isReset(err):
				if time.Since(opened) < timeout/2 {
					early.Add(1)
				} else {
					atDeadline.Add(1)
				}
			default:
				t.Errorf("idle connection: %v, want closed by the broker within %v", err, idleDeadline(timeout))
			}
		})
	}
	wg.Wait()
	if e, d := early.Load(), atDeadline.Load(); e != idle-held || d != held {
		t.Errorf("%d closed at once and %d at the login deadline, want %d and %d", e, d, idle-held, held)
	}
	const bound = 16 << 10
	if perConn > bound {
		t.Errorf("%d bytes per connection waiting for its CONNECT, want at most %d", perConn, bound)
	}
	t.Logf("memory per waiting connection: %d bytes", perConn)
	if err := readsEOF(trickle, idleDeadline(timeout)); err != nil {
		t.Errorf("trickling CONNECT: %v", err)
	}
	if err := readsEOF(huge, time.Second); err != nil {
		t.Errorf("CONNECT declaring 255 MiB: %v", err)
	}

	if err := <-published; err != nil {
		t.Fatalf("device publishing through the flood: %v", err)
	}
	testharness.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := got.count(); n < readings {
			return fmt.Errorf("ingest has %d of %d readings", n, readings)
		}
		return nil
	})
	for i := range readings {
		if !got.has(fmt.Sprintf("telemetry/us-east/thermostat/th-00001 reading-%d", i)) {
			t.Errorf("reading-%d lost", i)
		}
	}
	for reason, want := range map[string]uint64{
		"too_many_logging_in_from_address": idle - held,
		"login_timeout":                    held + 1, // and the trickle
		"connect_too_large":                1,
	} {
		if got := b.Refused(reason); got != want {
			t.Errorf("refused %s: %d, want %d", reason, got, want)
		}
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

// readsEOF waits up to d for the broker to close c.
func readsEOF(c net.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		return fmt.Errorf("still open after %v: %v", d, err)
	}
	return nil
}

// declareConnect opens a connection that declares a CONNECT of size bytes
// and sends nothing more.
func declareConnect(t *testing.T, addr string, size int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := []byte{0x10}
	for {
		b := byte(size & 0x7f)
		if size >>= 7; size > 0 {
			b |= 0x80
		}
		head = append(head, b)
		if size == 0 {
			break
		}
	}
	if _, err := c.Write(head); err != nil {
		t.Fatal(err)
	}
	return c
}

// trickleConnect declares a CONNECT of size bytes and sends one byte of it
// every 100 ms, in the background, until the broker closes it.
func trickleConnect(t *testing.T, addr string, size int) net.Conn {
	c := declareConnect(t, addr, size)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := c.Write([]byte{0}); err != nil {
					return
				}
			}
		}
	}()
	return c
}

// TestFailedLoginFloodIsAFewLines: 10,000 logins with a wrong password are
// each counted, and logged in a few lines that say what happened and how
// many, never a line per attempt.
func TestFailedLoginFloodIsAFewLines(t *testing.T) {
	const (
		attempts = 10_000
		workers  = 32
		interval = 500 * time.Millisecond
	)
	logs := &recorder{}
	// Every attempt is to get its CONNACK here: no address is held back
	// (TestFailedLoginsFromOneAddressAreHeldBack).
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxFailedLoginsPerIP: attempts + 1}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.SetLogInterval(interval)
	logs.reset() // the broker's start

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= attempts {
				if code, err := rawLogin(b.Addr(), device.user, "wrong"); err != nil || code != packets.ErrRefusedNotAuthorised {
					t.Errorf("login with a wrong password: CONNACK %#x, %v; want %#x", code, err, packets.ErrRefusedNotAuthorised)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	// Each refusal is counted once its connection has ended, after the
	// CONNACK the client read; the last line comes at most an interval
	// after the last attempt.
	testharness.CheckFor(t, 3*interval, 10*time.Millisecond, func() error {
		if n := b.Refused("bad_login"); n != attempts {
			return fmt.Errorf("bad_login counted %d, want %d", n, attempts)
		}
		if n := logs.sum("reason", "bad_login"); n != attempts {
			return fmt.Errorf("the log lines count %d failed logins, want %d", n, attempts)
		}
		return nil
	})
	lines := logs.lines()
	if all := logs.atLeast(slog.LevelInfo); all != len(lines) {
		t.Errorf("%d log lines at info or above, %d of them the refusals' lines", all, len(lines))
	}
	if most := int(took/interval) + 2; len(lines) > most {
		t.Errorf("%d log lines for %d failed logins over %v, want at most %d (one per %v)", len(lines), attempts, took, most, interval)
	}
	for _, l := range lines {
		if l.msg == "" || l.attrs["reason"] != "bad_login" || l.attrs["count"] == "" {
			t.Errorf("log line %q %v: want a message, the reason and a count", l.msg, l.attrs)
		}
	}
}

// TestFailedLoginsFromOneAddressAreHeldBack: an address that fails to log
// in MaxFailedLoginsPerIP times within the window has its new connections
// refused, counted and logged as too_many_failed_logins, until the window
// ends; a device on another address logs in meanwhile, and the address
// gets in again with a good credential after the window.
func TestFailedLoginsFromOneAddressAreHeldBack(t *testing.T) {
	const (
		limit  = 20
		window = 2 * time.Second
	)
	logs := &recorder{}
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxFailedLoginsPerIP: limit, FailedLoginWindow: window}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	guesser, other := net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)

	start := time.Now()
	answered, cut := 0, 0
	for range 3 * limit {
		code, err := rawLoginFrom(guesser, b.Addr(), device.user, "guess")
		switch {
		case err == nil && code == packets.ErrRefusedNotAuthorised:
			answered++
		case err != nil:
			cut++ // closed without a CONNACK
		default:
			t.Fatalf("a guess got CONNACK %#x", code)
		}
	}
	if time.Since(start) >= window {
		t.Fatalf("the guesses took %v, longer than the window %v: the test needs a faster machine or a longer window", time.Since(start), window)
	}
	if answered != limit || cut != 2*limit {
		t.Errorf("%d guesses answered and %d cut off, want %d and %d", answered, cut, limit, 2*limit)
	}
	if n := b.Refused("too_many_failed_logins"); n != 2*limit {
		t.Errorf("too_many_failed_logins counted %d, want %d", n, 2*limit)
	}
	// Another address is not held back.
	if code, err := rawLoginFrom(other, b.Addr(), device.user, device.password); err != nil || code != 0 {
		t.Errorf("a device on another address: CONNACK %#x, %v; want accepted", code, err)
	}
	// The guessing address gets in again once the window has passed.
	testharness.CheckFor(t, 2*window, 50*time.Millisecond, func() error {
		if code, err := rawLoginFrom(guesser, b.Addr(), device.user, device.password); err != nil || code != 0 {
			return fmt.Errorf("the address after the window: CONNACK %#x, %v", code, err)
		}
		return nil
	})
	if logs.sum("reason", "too_many_failed_logins") == 0 {
		t.Errorf("no log line names too_many_failed_logins: %v", logs.lines())
	}
}

// rawLogin sends one MQTT 3.1.1 CONNECT and returns the CONNACK's code.
func rawLogin(addr, user, password string) (byte, error) {
	return rawLoginFrom(nil, addr, user, password)
}

// rawLoginFrom is rawLogin from the local address from (nil: any).
func rawLoginFrom(from net.IP, addr, user, password string) (byte, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession, cp.ClientIdentifier, cp.Keepalive = true, "th-00001", 60
	cp.UsernameFlag, cp.Username = true, user
	cp.PasswordFlag, cp.Password = true, []byte(password)
	if err := cp.Write(conn); err != nil {
		return 0, err
	}
	p, err := packets.ReadPacket(conn)
	if err != nil {
		return 0, err
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		return 0, fmt.Errorf("got %v, want a CONNACK", p)
	}
	return ack.ReturnCode, nil
}

// recorder is a slog.Handler that keeps every record's message and
// attributes.
type recorder struct {
	mu   sync.Mutex
	recs []logLine
}

type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := logLine{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

// lines are the records with a reason: the tallies' lines.
func (r *recorder) lines() []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range r.recs {
		if _, ok := l.attrs["reason"]; ok {
			out = append(out, l)
		}
	}
	return out
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.recs = nil
	r.mu.Unlock()
}

// atLeast is how many records are at level or above.
func (r *recorder) atLeast(level slog.Level) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.recs {
		if l.level >= level {
			n++
		}
	}
	return n
}

// sum adds the count of the lines whose key is value.
func (r *recorder) sum(key, value string) uint64 {
	var n uint64
	for _, l := range r.lines() {
		if l.attrs[key] == value {
			var c uint64
			fmt.Sscan(l.attrs["count"], &c)
			n += c
		}
	}
	return n
}
