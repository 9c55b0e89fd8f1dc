package protocol

import (
	"math"
	"sync"
	"time"
)

// Decode validates an MQTT message fully and returns its topic and reading.
// Checks run in this order, and the first that fails names the Reason:
// payload size (too_large, before any parsing), topic (bad_topic), JSON
// (bad_json), "v" (bad_version), the version's fields (bad_field), device
// against the topic (topic_mismatch), metrics (bad_metric), and ts against now
// and lim (stale, future). JSON must be UTF-8, nest at most 8 deep and have
// no duplicate names in the top-level object; duplicate metric names are
// bad_metric.
//
// Any error is a *Rejection. The Topic is returned whenever the topic parsed,
// and the Reading when only the time window failed, so that callers can label
// what they dead-letter.
func Decode(topic string, payload []byte, now time.Time, lim Limits) (Topic, Reading, error) {
	if len(payload) > MaxPayloadBytes {
		return Topic{}, Reading{}, tooLarge(len(payload))
	}
	t, err := ParseTopic(topic)
	if err != nil {
		return Topic{}, Reading{}, err
	}
	r, rej := decode(payload, t.Device, true)
	if rej != nil {
		return t, Reading{}, rej
	}
	if rej := checkWindow(r.TS, now, lim); rej != nil {
		return t, r, rej
	}
	return t, r, nil
}

// Unmarshal decodes a payload with the same size, JSON and schema checks as
// Decode, but without a topic or a time window: for messages that ingest has
// already validated. Any error is a *Rejection.
func Unmarshal(payload []byte) (Reading, error) {
	if len(payload) > MaxPayloadBytes {
		return Reading{}, tooLarge(len(payload))
	}
	r, rej := decode(payload, "", false)
	if rej != nil {
		return Reading{}, rej
	}
	return r, nil
}

func tooLarge(n int) *Rejection {
	return reject(ReasonTooLarge, "payload is %d bytes, max %d", n, MaxPayloadBytes)
}

var docs = sync.Pool{New: func() any {
	return &document{nodes: make([]node, 0, 64), arena: make([]byte, 0, 256), strs: make([]byte, 0, 512)}
}}

// decode parses payload and hands it to the decoder of its version. When
// checkDevice is set, the device must equal device.
func decode(payload []byte, device string, checkDevice bool) (Reading, *Rejection) {
	d := docs.Get().(*document)
	defer func() {
		// Buffers grow with the payload, which is at most MaxPayloadBytes,
		// so a document is always small enough to keep.
		d.src = nil
		docs.Put(d)
	}()
	if rej := d.parse(payload); rej != nil {
		return Reading{}, rej
	}
	v, rej := d.version()
	if rej != nil {
		return Reading{}, rej
	}
	switch v {
	case Version1:
		return d.decodeV1(device, checkDevice)
		// A new schema version adds a case here and a decoder beside v1.go.
	}
	return Reading{}, reject(ReasonBadVersion, "unsupported version %d", v)
}

// version returns the top-level "v", which selects the schema.
func (d *document) version() (uint64, *Rejection) {
	for i := 1; i < len(d.nodes); i = int(d.nodes[i].next) {
		if string(d.key(i)) != "v" {
			continue
		}
		n := d.nodes[i]
		if n.kind != kindNumber {
			return 0, reject(ReasonBadVersion, "v must be a number, got %s", n.kind)
		}
		if n.flags != 0 {
			return 0, reject(ReasonBadVersion, "v must be a positive integer, got %s", quote(d.raw(i)))
		}
		v, ok := parseUint(d.raw(i))
		if !ok {
			return 0, reject(ReasonBadVersion, "unsupported version %s", quote(d.raw(i)))
		}
		return v, nil
	}
	return 0, reject(ReasonBadVersion, "missing field v")
}

// checkWindow rejects a ts older than now-MaxAge or newer than now+MaxSkew.
func checkWindow(ts int64, now time.Time, lim Limits) *Rejection {
	age, skew := lim.MaxAge, lim.MaxSkew
	if age <= 0 {
		age = DefaultMaxAge
	}
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	n := now.UnixMilli()
	if lo := addSat(n, -age.Milliseconds()); ts < lo {
		return reject(ReasonStale, "ts %d is more than %s before now (%d)", ts, age, n)
	}
	if hi := addSat(n, skew.Milliseconds()); ts > hi {
		return reject(ReasonFuture, "ts %d is more than %s after now (%d)", ts, skew, n)
	}
	return nil
}

// addSat adds without wrapping around.
func addSat(a, b int64) int64 {
	s := a + b
	if b > 0 && s < a {
		return math.MaxInt64
	}
	if b < 0 && s > a {
		return math.MinInt64
	}
	return s
}
