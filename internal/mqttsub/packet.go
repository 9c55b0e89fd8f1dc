package mqttsub

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
	"unsafe"
)

// MQTT 3.1.1 control packet types (the high nibble of the first byte).
const (
	typeConnect     = 1
	typeConnack     = 2
	typePublish     = 3
	typePuback      = 4
	typeSubscribe   = 8
	typeSuback      = 9
	typeUnsuback    = 11
	typePingreq     = 12
	typePingresp    = 13
	typeDisconnect  = 14
	maxRemainingLen = 268_435_455 // the largest the four-byte length can say
)

// ErrProtocol is wrapped by every error about a packet the broker sent that
// MQTT 3.1.1 does not allow; the connection is dropped and made again.
var ErrProtocol = errors.New("MQTT protocol violation")

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// packet is one control packet read from the broker. For a PUBLISH, topic
// and payload point into body, which is allocated per packet and never
// written again, so they stay valid for as long as the message is held.
type packet struct {
	kind  byte
	flags byte
	body  []byte // the variable header and payload, up to the size bound

	// PUBLISH only.
	id      uint16
	topic   string
	payload []byte
	omitted int // payload bytes beyond the size bound, read and dropped
}

// readPacket reads one control packet. A PUBLISH whose payload would take
// its body past maxBody keeps its topic and packet id and drops the
// payload (omitted says how many bytes), so an oversized message can still
// be acknowledged and accounted for rather than fail the connection every
// time the broker redelivers it. Other packets the broker sends are a few
// bytes long; one longer than maxBody is a protocol error.
func readPacket(r *bufio.Reader, maxBody int) (packet, error) {
	var p packet
	first, err := r.ReadByte()
	if err != nil {
		return p, err
	}
	p.kind, p.flags = first>>4, first&0x0f
	n, err := readRemainingLength(r)
	if err != nil {
		return p, err
	}
	if p.kind != typePublish {
		if n > maxBody {
			return p, protocolError("packet type %d of %d bytes", p.kind, n)
		}
		p.body = make([]byte, n)
		if _, err := io.ReadFull(r, p.body); err != nil {
			return p, unexpectedEOF(err)
		}
		return p, nil
	}
	return p, readPublish(r, &p, n, maxBody)
}

// readPublish reads the n bytes of a PUBLISH after its fixed header.
func readPublish(r *bufio.Reader, p *packet, n, maxBody int) error {
	qos := (p.flags >> 1) & 3
	if qos == 3 {
		return protocolError("PUBLISH with QoS 3")
	}
	if n > maxBody {
		return readOversizedPublish(r, p, n, qos)
	}
	p.body = make([]byte, n)
	if _, err := io.ReadFull(r, p.body); err != nil {
		return unexpectedEOF(err)
	}
	b := p.body
	if len(b) < 2 {
		return protocolError("PUBLISH of %d bytes has no topic length", len(b))
	}
	tl := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < tl {
		return protocolError("PUBLISH topic of %d bytes in %d", tl, len(b))
	}
	topic := b[:tl]
	b = b[tl:]
	if qos > 0 {
		if len(b) < 2 {
			return protocolError("QoS %d PUBLISH without a packet id", qos)
		}
		p.id = binary.BigEndian.Uint16(b)
		b = b[2:]
		if p.id == 0 {
			return protocolError("QoS %d PUBLISH with packet id 0", qos)
		}
	}
	if err := checkTopic(topic); err != nil {
		return err
	}
	// The body is never written again: the topic may share its memory.
	p.topic = unsafe.String(unsafe.SliceData(topic), len(topic))
	p.payload = b
	return nil
}

// readOversizedPublish reads the topic and packet id of a PUBLISH of n
// bytes and drops its payload.
func readOversizedPublish(r *bufio.Reader, p *packet, n int, qos byte) error {
	var two [2]byte
	if _, err := io.ReadFull(r, two[:]); err != nil {
		return unexpectedEOF(err)
	}
	tl := int(binary.BigEndian.Uint16(two[:]))
	rest := n - 2 - tl
	if qos > 0 {
		rest -= 2
	}
	if rest < 0 {
		return protocolError("PUBLISH topic of %d bytes in %d", tl, n)
	}
	topic := make([]byte, tl)
	if _, err := io.ReadFull(r, topic); err != nil {
		return unexpectedEOF(err)
	}
	if err := checkTopic(topic); err != nil {
		return err
	}
	p.topic = string(topic)
	if qos > 0 {
		if _, err := io.ReadFull(r, two[:]); err != nil {
			return unexpectedEOF(err)
		}
		if p.id = binary.BigEndian.Uint16(two[:]); p.id == 0 {
			return protocolError("QoS %d PUBLISH with packet id 0", qos)
		}
	}
	if _, err := r.Discard(rest); err != nil {
		return unexpectedEOF(err)
	}
	p.omitted = rest
	return nil
}

// checkTopic rejects what a broker must never send as a topic name.
func checkTopic(topic []byte) error {
	if len(topic) == 0 || !utf8.Valid(topic) {
		return protocolError("PUBLISH with an empty or invalid UTF-8 topic")
	}
	return nil
}

// readRemainingLength reads MQTT's variable-length integer: seven bits per
// byte, least significant first, at most four bytes.
func readRemainingLength(r io.ByteReader) (int, error) {
	n, shift := 0, 0
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			return n, nil
		}
		shift += 7
	}
	return 0, protocolError("remaining length longer than four bytes")
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendRemainingLength appends n in MQTT's variable-length encoding.
func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// connectPacket encodes a CONNECT for protocol level 4 (MQTT 3.1.1).
func connectPacket(clientID, username, password string, cleanSession bool, keepAlive uint16) ([]byte, error) {
	for what, s := range map[string]string{"client id": clientID, "username": username, "password": password} {
		if len(s) > 0xffff {
			return nil, fmt.Errorf("MQTT %s of %d bytes: at most 65535", what, len(s))
		}
	}
	var flags byte
	if cleanSession {
		flags |= 0x02
	}
	if username != "" {
		flags |= 0x80
	}
	if password != "" {
		flags |= 0x40
	}
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4, flags)
	v = binary.BigEndian.AppendUint16(v, keepAlive)
	v = appendString(v, clientID)
	if username != "" {
		v = appendString(v, username)
	}
	if password != "" {
		v = appendString(v, password)
	}
	b := appendRemainingLength([]byte{typeConnect << 4}, len(v))
	return append(b, v...), nil
}

// subscribePacket encodes a SUBSCRIBE of one topic filter at QoS 1.
func subscribePacket(id uint16, filter string) []byte {
	var v []byte
	v = binary.BigEndian.AppendUint16(v, id)
	v = appendString(v, filter)
	v = append(v, 1)
	b := appendRemainingLength([]byte{typeSubscribe<<4 | 0x02}, len(v))
	return append(b, v...)
}

// pubackPacket encodes the PUBACK of packet id.
func pubackPacket(b []byte, id uint16) []byte {
	return append(b, typePuback<<4, 2, byte(id>>8), byte(id))
}

var (
	pingreqPacket    = []byte{typePingreq << 4, 0}
	disconnectPacket = []byte{typeDisconnect << 4, 0}
)

// connackError turns a CONNACK's body into nil (accepted) or the broker's
// refusal.
func connackError(body []byte) error {
	if len(body) != 2 {
		return protocolError("CONNACK of %d bytes", len(body))
	}
	if body[1] == 0 {
		return nil
	}
	return &RefusedError{Code: body[1]}
}

// RefusedError is the broker's refusal of a CONNECT.
type RefusedError struct{ Code byte }

func (e *RefusedError) Error() string {
	why := map[byte]string{
		1: "unacceptable protocol version",
		2: "client identifier rejected",
		3: "server unavailable",
		4: "bad user name or password",
		5: "not authorized",
	}[e.Code]
	if why == "" {
		why = "unknown reason"
	}
	return fmt.Sprintf("broker refused the connection: %s (CONNACK code %d)", why, e.Code)
}
