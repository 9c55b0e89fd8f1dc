package protocol

import (
	"bytes"
	"fmt"
	"math"
	"sync"
	"time"
)

// Decode validates an MQTT message fully and returns its topic and what it
// carries: one reading (v1) or a batch (v2). Checks run in this order, and
// the first that fails names the Reason: payload size (too_large, before
// any parsing: over MaxPayloadBytes unless it starts as a v2 payload
// must, over MaxBatchBytes in any case), topic (bad_topic), JSON
// (bad_json), "v" (bad_version), the version's fields (bad_field), device
// against the topic
// (topic_mismatch), metrics (bad_metric), and each reading's ts against now
// and lim (stale, future). JSON must be UTF-8, nest at most 8 deep and
// have no duplicate names in the top-level object; duplicate metric names
// are bad_metric. In a v2 batch the rows come last, each in turn (its
// fields, its metrics, then, once every row is valid, its ts against the
// window), and one bad reading rejects the whole batch.
//
// Any error is a *Rejection. The Topic is returned whenever the topic
// parsed, and the Batch when only the time window failed, so that callers
// can label what they dead-letter.
func Decode(topic string, payload []byte, now time.Time, lim Limits) (Topic, Batch, error) {
	if rej := checkSize(payload); rej != nil {
		return Topic{}, Batch{}, rej
	}
	t, err := ParseTopic(topic)
	if err != nil {
		return Topic{}, Batch{}, err
	}
	b, rej := decode(payload, t.Device, true)
	if rej != nil {
		return t, Batch{}, rej
	}
	for i := range b.Readings {
		if rej := checkWindow(b.Readings[i].TS, now, lim); rej != nil {
			if b.Version == Version2 {
				rej.Detail = fmt.Sprintf("readings[%d] (seq %d): %s", i, b.Readings[i].Seq, rej.Detail)
			}
			return t, b, rej
		}
	}
	return t, b, nil
}

// Unmarshal decodes a payload with the same size, JSON and schema checks as
// Decode, but without a topic or a time window: for messages that ingest has
// already validated. Any error is a *Rejection.
func Unmarshal(payload []byte) (Batch, error) {
	if rej := checkSize(payload); rej != nil {
		return Batch{}, rej
	}
	b, rej := decode(payload, "", false)
	if rej != nil {
		return Batch{}, rej
	}
	return b, nil
}

// v2Prefix starts every v2 payload over MaxPayloadBytes, so that its size
// is judged before any parsing, as v1's is.
const v2Prefix = `{"v":2,`

// checkSize refuses, before any parsing, a payload over MaxBatchBytes, and
// one over MaxPayloadBytes that does not start with v2Prefix.
func checkSize(payload []byte) *Rejection {
	switch n := len(payload); {
	case n > MaxBatchBytes:
		return reject(ReasonTooLarge, "payload is %d bytes, max %d", n, MaxBatchBytes)
	case n > MaxPayloadBytes && !bytes.HasPrefix(payload, []byte(v2Prefix)):
		return reject(ReasonTooLarge, "payload is %d bytes, max %d (up to %d for a v2 batch starting %s)", n, MaxPayloadBytes, MaxBatchBytes, v2Prefix)
	}
	return nil
}

var docs = sync.Pool{New: func() any {
	return &document{nodes: make([]node, 0, 64), arena: make([]byte, 0, 256), strs: make([]byte, 0, 512)}
}}

// decode parses payload and hands it to the decoder of its version. When
// checkDevice is set, the device must equal device.
func decode(payload []byte, device string, checkDevice bool) (Batch, *Rejection) {
	d := docs.Get().(*document)
	defer func() {
		// Buffers grow with the payload, which is at most MaxBatchBytes,
		// so a document is always small enough to keep.
		d.src = nil
		docs.Put(d)
	}()
	if rej := d.parse(payload); rej != nil {
		return Batch{}, rej
	}
	v, rej := d.version()
	if rej != nil {
		return Batch{}, rej
	}
	switch v {
	case Version1:
		r, rej := d.decodeV1(device, checkDevice)
		if rej != nil {
			return Batch{}, rej
		}
		return Batch{Version: Version1, Device: r.Device, Boot: r.Boot, Readings: []Reading{r}}, nil
	case Version2:
		return d.decodeV2(device, checkDevice)
		// A new schema version adds a case here and a decoder beside v2.go.
	}
	return Batch{}, reject(ReasonBadVersion, "unsupported version %d", v)
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
