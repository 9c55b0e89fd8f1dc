package mqttsub

import (
	"bufio"
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzReadPacket feeds readPacket whatever a broker, or something posing as
// one, could send: it must never panic, never keep more than the bound,
// and a PUBLISH it returns must be one the client can deliver.
func FuzzReadPacket(f *testing.F) {
	const maxBody = 256
	seeds := [][]byte{
		{0x20, 0x02, 0x00, 0x00},       // CONNACK accepted
		{0x20, 0x02, 0x01, 0x05},       // CONNACK refused
		{0x90, 0x03, 0x00, 0x01, 0x01}, // SUBACK
		{0xd0, 0x00},                   // PINGRESP
		{0xb0, 0x02, 0x00, 0x01},       // UNSUBACK
		publish(0, "telemetry/eu-west/thermostat/th-00001", 0, []byte(`{"v":1,"device":"th-00001"}`)),
		publish(2, "a/b", 7, []byte("hi")),
		publish(0x0b, "a/b", 0xffff, nil),
		publish(2, "big/topic", 3, bytes.Repeat([]byte{'z'}, 1000)), // oversized
		publish(6, "a", 1, []byte("qos 3")),
		publish(2, "", 1, []byte("empty topic")),
		{0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 'a'}, // the largest length, cut
		{0x30, 0x80, 0x80, 0x80, 0x80, 0x01},            // five-byte length
	}
	// Streams of several packets, as the client reads them.
	seeds = append(seeds, bytes.Join([][]byte{seeds[0], seeds[2], seeds[6], seeds[8], seeds[3]}, nil))
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for i := 0; ; i++ {
			p, err := readPacket(r, maxBody)
			if err != nil {
				return
			}
			if i > len(b)/2 {
				t.Fatalf("%d packets from %d bytes: each takes two at least", i+1, len(b))
			}
			if len(p.body) > maxBody {
				t.Fatalf("packet type %d kept a body of %d bytes, bound %d", p.kind, len(p.body), maxBody)
			}
			if p.kind != typePublish {
				continue
			}
			if len(p.payload) > len(p.body) {
				t.Fatalf("payload of %d bytes from a body of %d", len(p.payload), len(p.body))
			}
			if p.omitted < 0 || p.omitted > 0 && len(p.payload) != 0 {
				t.Fatalf("omitted %d with a payload of %d bytes", p.omitted, len(p.payload))
			}
			if p.topic == "" || !utf8.ValidString(p.topic) {
				t.Fatalf("PUBLISH with topic %q", p.topic)
			}
			qos := (p.flags >> 1) & 3
			if qos == 3 || (qos > 0) != (p.id != 0) {
				t.Fatalf("PUBLISH QoS %d with packet id %d", qos, p.id)
			}
		}
	})
}
