package mqttsub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// remainingLengths are MQTT 3.1.1's own examples (section 2.2.3): the
// smallest and largest value of each encoded size.
var remainingLengths = []struct {
	n       int
	encoded []byte
}{
	{0, []byte{0x00}},
	{127, []byte{0x7f}},
	{128, []byte{0x80, 0x01}},
	{16383, []byte{0xff, 0x7f}},
	{16384, []byte{0x80, 0x80, 0x01}},
	{2097151, []byte{0xff, 0xff, 0x7f}},
	{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
	{268435455, []byte{0xff, 0xff, 0xff, 0x7f}},
}

func TestRemainingLengthRoundTrip(t *testing.T) {
	for _, tc := range remainingLengths {
		t.Run(strconv.Itoa(tc.n), func(t *testing.T) {
			if got := appendRemainingLength(nil, tc.n); !bytes.Equal(got, tc.encoded) {
				t.Fatalf("appendRemainingLength(%d) = % x, want % x", tc.n, got, tc.encoded)
			}
			r := bytes.NewReader(append(append([]byte(nil), tc.encoded...), 0xaa))
			n, err := readRemainingLength(r)
			if err != nil || n != tc.n {
				t.Fatalf("readRemainingLength(% x) = %d, %v; want %d", tc.encoded, n, err, tc.n)
			}
			if r.Len() != 1 {
				t.Fatalf("readRemainingLength read %d bytes past the length", 1-r.Len())
			}
		})
	}
}

func TestRemainingLengthErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"five bytes", []byte{0x80, 0x80, 0x80, 0x80, 0x01}, ErrProtocol},
		{"four continuation bytes", []byte{0xff, 0xff, 0xff, 0xff}, ErrProtocol},
		{"empty", nil, io.ErrUnexpectedEOF},
		{"continuation then end", []byte{0x80}, io.ErrUnexpectedEOF},
		{"three continuation bytes then end", []byte{0x80, 0x80, 0x80}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := readRemainingLength(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("readRemainingLength(% x) = %d, %v; want %v", tc.in, n, err, tc.want)
			}
		})
	}
}

// publish encodes a PUBLISH as a broker sends it: flags are the low nibble
// of the first byte (DUP 8, QoS<<1, RETAIN 1); id is written when QoS > 0.
func publish(flags byte, topic string, id uint16, payload []byte) []byte {
	var v []byte
	v = appendString(v, topic)
	if (flags>>1)&3 > 0 {
		v = binary.BigEndian.AppendUint16(v, id)
	}
	v = append(v, payload...)
	return append(appendRemainingLength([]byte{typePublish<<4 | flags}, len(v)), v...)
}

// rawPacket encodes any packet type with the given body.
func rawPacket(first byte, body []byte) []byte {
	return append(appendRemainingLength([]byte{first}, len(body)), body...)
}

func TestReadPacket(t *testing.T) {
	const maxBody = 256
	big := bytes.Repeat([]byte{'x'}, maxBody)
	for _, tc := range []struct {
		name    string
		in      []byte
		kind    byte
		flags   byte
		topic   string
		id      uint16
		payload string
		body    []byte // for packets other than PUBLISH
	}{
		{name: "QoS 0", in: publish(0, "telemetry/eu-west/thermostat/th-1", 0, []byte(`{"v":1}`)),
			kind: typePublish, topic: "telemetry/eu-west/thermostat/th-1", payload: `{"v":1}`},
		{name: "QoS 0 retained, empty payload", in: publish(1, "a", 0, nil),
			kind: typePublish, flags: 1, topic: "a"},
		{name: "QoS 1", in: publish(2, "a/b", 7, []byte("hi")),
			kind: typePublish, flags: 2, topic: "a/b", id: 7, payload: "hi"},
		{name: "QoS 1 DUP", in: publish(0x0a, "a/b", 0xfffe, []byte("again")),
			kind: typePublish, flags: 0x0a, topic: "a/b", id: 0xfffe, payload: "again"},
		{name: "QoS 1 without payload", in: publish(2, "a/b", 1, nil),
			kind: typePublish, flags: 2, topic: "a/b", id: 1},
		{name: "QoS 2 decodes (the client refuses it)", in: publish(4, "a", 9, []byte("p")),
			kind: typePublish, flags: 4, topic: "a", id: 9, payload: "p"},
		{name: "UTF-8 topic", in: publish(0, "télémétrie/ü", 0, []byte("p")),
			kind: typePublish, topic: "télémétrie/ü", payload: "p"},
		{name: "PUBLISH of exactly maxBody", in: publish(0, "t", 0, big[:maxBody-3]),
			kind: typePublish, topic: "t", payload: string(big[:maxBody-3])},
		{name: "CONNACK", in: []byte{0x20, 0x02, 0x01, 0x00}, kind: typeConnack, body: []byte{1, 0}},
		{name: "SUBACK", in: []byte{0x90, 0x03, 0x00, 0x01, 0x01}, kind: typeSuback, body: []byte{0, 1, 1}},
		{name: "PINGRESP", in: []byte{0xd0, 0x00}, kind: typePingresp, body: []byte{}},
		{name: "other packet of exactly maxBody", in: rawPacket(typeSuback<<4, big), kind: typeSuback, body: big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := readPacket(bufio.NewReader(bytes.NewReader(tc.in)), maxBody)
			if err != nil {
				t.Fatalf("readPacket(% x): %v", tc.in, err)
			}
			if p.kind != tc.kind || p.flags != tc.flags {
				t.Errorf("type %d flags %#x, want %d %#x", p.kind, p.flags, tc.kind, tc.flags)
			}
			if p.kind != typePublish {
				if !bytes.Equal(p.body, tc.body) {
					t.Errorf("body % x, want % x", p.body, tc.body)
				}
				return
			}
			if p.topic != tc.topic || p.id != tc.id || string(p.payload) != tc.payload || p.omitted != 0 {
				t.Errorf("topic %q id %d payload %q omitted %d; want %q %d %q 0",
					p.topic, p.id, p.payload, p.omitted, tc.topic, tc.id, tc.payload)
			}
		})
	}
}

func TestReadPacketRejects(t *testing.T) {
	const maxBody = 256
	body := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	payload300 := bytes.Repeat([]byte{'y'}, 300)
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"QoS 3", publish(6, "a", 1, []byte("p")), ErrProtocol},
		{"QoS 3 oversized", publish(6, "a", 1, payload300), ErrProtocol},
		{"QoS 1 packet id 0", publish(2, "a", 0, []byte("p")), ErrProtocol},
		{"QoS 1 oversized packet id 0", publish(2, "a", 0, payload300), ErrProtocol},
		{"QoS 1 without packet id", rawPacket(0x32, body(u16(1), []byte("a"))), ErrProtocol},
		{"QoS 1 half a packet id", rawPacket(0x32, body(u16(1), []byte("a"), []byte{0})), ErrProtocol},
		{"empty topic", publish(0, "", 0, []byte("p")), ErrProtocol},
		{"empty topic QoS 1", publish(2, "", 3, []byte("p")), ErrProtocol},
		{"empty topic oversized", publish(2, "", 3, payload300), ErrProtocol},
		{"invalid UTF-8 topic", publish(0, "a/\xff\xfe", 0, []byte("p")), ErrProtocol},
		{"invalid UTF-8 topic oversized", publish(0, "a/\xc3", 0, payload300), ErrProtocol},
		{"no topic length", rawPacket(0x30, []byte{0}), ErrProtocol},
		{"empty PUBLISH", rawPacket(0x30, nil), ErrProtocol},
		{"topic length past the body", rawPacket(0x30, body(u16(9), []byte("a/b"))), ErrProtocol},
		{"topic length past the body QoS 1", rawPacket(0x32, body(u16(3), []byte("a/b"))), ErrProtocol},
		{"topic length past an oversized body", rawPacket(0x30, body(u16(400), payload300)), ErrProtocol},
		{"topic and id past an oversized body", rawPacket(0x32, body(u16(299), payload300)), ErrProtocol},
		{"other packet beyond maxBody", rawPacket(typeSuback<<4, make([]byte, maxBody+1)), ErrProtocol},
		{"CONNACK beyond maxBody", rawPacket(typeConnack<<4, make([]byte, 1<<20)), ErrProtocol},
		{"remaining length of five bytes", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, ErrProtocol},

		{"nothing at all", nil, io.EOF},
		{"first byte only", []byte{0x30}, io.ErrUnexpectedEOF},
		{"remaining length cut", []byte{0x30, 0x80}, io.ErrUnexpectedEOF},
		{"PUBLISH body cut", publish(2, "a/b", 1, []byte("payload"))[:8], io.ErrUnexpectedEOF},
		{"PUBLISH body empty", []byte{0x30, 0x05}, io.ErrUnexpectedEOF},
		{"CONNACK body cut", []byte{0x20, 0x02, 0x00}, io.ErrUnexpectedEOF},
		{"oversized topic length cut", []byte{0x32, 0x80, 0x04, 0x00}, io.ErrUnexpectedEOF},
		{"oversized topic cut", publish(2, "a/b/c", 1, payload300)[:7], io.ErrUnexpectedEOF},
		{"oversized packet id cut", publish(2, "a", 1, payload300)[:7], io.ErrUnexpectedEOF},
		{"oversized payload cut", publish(2, "a", 1, payload300)[:100], io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := readPacket(bufio.NewReader(bytes.NewReader(tc.in)), maxBody)
			if !errors.Is(err, tc.want) {
				t.Fatalf("readPacket(% x) = type %d topic %q, %v; want %v", tc.in, p.kind, p.topic, err, tc.want)
			}
			if tc.want == io.ErrUnexpectedEOF && errors.Is(err, io.EOF) {
				// A connection cut mid-packet must not read as a clean end.
				t.Fatalf("readPacket = %v, which is also io.EOF", err)
			}
		})
	}
}

// An oversized PUBLISH keeps what it takes to acknowledge and account for
// it, and leaves the stream at the start of the next packet.
func TestReadPacketOversizedPublish(t *testing.T) {
	const maxBody = 256
	for _, tc := range []struct {
		name    string
		flags   byte
		id      uint16
		payload int
	}{
		{"QoS 1, body one past maxBody", 2, 42, maxBody + 1 - 2 - len("big/topic") - 2},
		{"QoS 1 DUP, 10 KiB", 0x0a, 0x8000, 10 << 10},
		{"QoS 0, 10 KiB", 0, 0, 10 << 10},
		{"QoS 1, 1 MiB", 2, 1, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := bytes.Repeat([]byte{'z'}, tc.payload)
			var stream []byte
			stream = append(stream, publish(tc.flags, "big/topic", tc.id, payload)...)
			stream = append(stream, publish(2, "next/topic", 43, []byte("next"))...)
			stream = append(stream, 0xd0, 0x00) // PINGRESP
			r := bufio.NewReaderSize(bytes.NewReader(stream), 64)

			p, err := readPacket(r, maxBody)
			if err != nil {
				t.Fatalf("oversized PUBLISH: %v", err)
			}
			if p.kind != typePublish || p.flags != tc.flags || p.topic != "big/topic" || p.id != tc.id {
				t.Errorf("type %d flags %#x topic %q id %d; want %d %#x big/topic %d", p.kind, p.flags, p.topic, p.id, typePublish, tc.flags, tc.id)
			}
			if len(p.payload) != 0 || p.omitted != tc.payload {
				t.Errorf("payload of %d bytes, omitted %d; want none and %d", len(p.payload), p.omitted, tc.payload)
			}
			if len(p.body) > maxBody {
				t.Errorf("kept a body of %d bytes, more than %d", len(p.body), maxBody)
			}

			p, err = readPacket(r, maxBody)
			if err != nil {
				t.Fatalf("the PUBLISH after the oversized one: %v", err)
			}
			if p.topic != "next/topic" || p.id != 43 || string(p.payload) != "next" || p.omitted != 0 {
				t.Errorf("next PUBLISH: topic %q id %d payload %q omitted %d", p.topic, p.id, p.payload, p.omitted)
			}
			if p, err = readPacket(r, maxBody); err != nil || p.kind != typePingresp {
				t.Errorf("then type %d, %v; want PINGRESP", p.kind, err)
			}
			if _, err = readPacket(r, maxBody); err != io.EOF {
				t.Errorf("at the end: %v, want io.EOF", err)
			}
		})
	}
}

// A message's topic and payload are its own: reading the next packet does
// not change them.
func TestReadPacketMessagesDoNotShareMemory(t *testing.T) {
	stream := append(publish(2, "first/topic", 1, []byte("first payload")),
		publish(2, "other/topic", 2, []byte("other payload"))...)
	r := bufio.NewReader(bytes.NewReader(stream))
	first, err := readPacket(r, 256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readPacket(r, 256); err != nil {
		t.Fatal(err)
	}
	if first.topic != "first/topic" || string(first.payload) != "first payload" {
		t.Fatalf("after the next read the first message is %q %q", first.topic, first.payload)
	}
}

func TestEncoders(t *testing.T) {
	connect := func(flags byte, keepAlive uint16, fields ...string) []byte {
		v := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, byte(keepAlive >> 8), byte(keepAlive)}
		for _, f := range fields {
			v = append(binary.BigEndian.AppendUint16(v, uint16(len(f))), f...)
		}
		return rawPacket(0x10, v)
	}
	for _, tc := range []struct {
		name string
		got  func() ([]byte, error)
		want []byte
	}{
		{"CONNECT with user and password", func() ([]byte, error) { return connectPacket("ingest-eu", "ingest", "secret", false, 30) },
			connect(0xc0, 30, "ingest-eu", "ingest", "secret")},
		{"CONNECT clean session", func() ([]byte, error) { return connectPacket("c", "u", "p", true, 0xffff) },
			connect(0xc2, 0xffff, "c", "u", "p")},
		{"CONNECT without login", func() ([]byte, error) { return connectPacket("c", "", "", false, 1) },
			connect(0x00, 1, "c")},
		{"CONNECT user without password", func() ([]byte, error) { return connectPacket("c", "u", "", true, 60) },
			connect(0x82, 60, "c", "u")},
		{"CONNECT long password (two-byte length)", func() ([]byte, error) { return connectPacket("c", "u", strings.Repeat("p", 200), false, 5) },
			connect(0xc0, 5, "c", "u", strings.Repeat("p", 200))},
		{"SUBSCRIBE", func() ([]byte, error) { return subscribePacket(1, "telemetry/#"), nil },
			append([]byte{0x82, 16, 0, 1, 0, 11}, append([]byte("telemetry/#"), 1)...)},
		{"PUBACK", func() ([]byte, error) { return pubackPacket(nil, 0x1234), nil }, []byte{0x40, 0x02, 0x12, 0x34}},
		{"PUBACK appends", func() ([]byte, error) { return pubackPacket([]byte{0xee}, 1), nil }, []byte{0xee, 0x40, 0x02, 0x00, 0x01}},
		{"PINGREQ", func() ([]byte, error) { return pingreqPacket, nil }, []byte{0xc0, 0x00}},
		{"DISCONNECT", func() ([]byte, error) { return disconnectPacket, nil }, []byte{0xe0, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.got()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got  % x\nwant % x", got, tc.want)
			}
		})
	}
	if _, err := connectPacket(strings.Repeat("c", 0x10000), "u", "p", false, 30); err == nil {
		t.Error("connectPacket took a client id of 65536 bytes")
	}
}

func TestConnackError(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		code byte // of the RefusedError; 0 for none
		want error
	}{
		{"accepted", []byte{0, 0}, 0, nil},
		{"accepted, session present", []byte{1, 0}, 0, nil},
		{"bad protocol version", []byte{0, 1}, 1, nil},
		{"client id rejected", []byte{0, 2}, 2, nil},
		{"server unavailable", []byte{0, 3}, 3, nil},
		{"bad user name or password", []byte{0, 4}, 4, nil},
		{"not authorized", []byte{0, 5}, 5, nil},
		{"unknown code", []byte{0, 99}, 99, nil},
		{"empty", []byte{}, 0, ErrProtocol},
		{"one byte", []byte{0}, 0, ErrProtocol},
		{"three bytes", []byte{0, 0, 0}, 0, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connackError(tc.body)
			var refused *RefusedError
			switch {
			case tc.want != nil:
				if !errors.Is(err, tc.want) {
					t.Fatalf("connackError(% x) = %v, want %v", tc.body, err, tc.want)
				}
			case tc.code == 0:
				if err != nil {
					t.Fatalf("connackError(% x) = %v, want nil", tc.body, err)
				}
			case !errors.As(err, &refused) || refused.Code != tc.code:
				t.Fatalf("connackError(% x) = %v, want a RefusedError with code %d", tc.body, err, tc.code)
			}
		})
	}
}

func TestRefusedErrorText(t *testing.T) {
	for code, want := range map[byte]string{
		1:  "unacceptable protocol version",
		2:  "client identifier rejected",
		3:  "server unavailable",
		4:  "bad user name or password",
		5:  "not authorized",
		6:  "unknown reason",
		99: "unknown reason",
	} {
		msg := (&RefusedError{Code: code}).Error()
		if !strings.Contains(msg, want) || !strings.Contains(msg, "code "+strconv.Itoa(int(code))) {
			t.Errorf("RefusedError{%d} = %q, want it to say %q and the code", code, msg, want)
		}
	}
}
