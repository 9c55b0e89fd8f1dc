package protocol

import (
	"fmt"
	"time"
)

// Wire protocol bounds. See docs/PROTOCOL.md.
const (
	Version1 = 1
	Version2 = 2
	// MaxPayloadBytes bounds a v1 payload, one reading.
	MaxPayloadBytes = 4096
	// MaxBatchBytes bounds any payload, a v2 batch's too: a larger one is
	// refused before it is parsed.
	MaxBatchBytes = 64 << 10
	// MaxBatchReadings bounds the readings of a v2 batch.
	MaxBatchReadings = 500
	MaxMetrics       = 32
	DefaultMaxAge    = 24 * time.Hour
	DefaultMaxSkew   = 5 * time.Minute
)

// Reason is the code a rejected payload is dead-lettered under.
type Reason string

// Reason codes, stable: they appear in subjects deadletter.<region>.<reason>.
const (
	ReasonTooLarge      Reason = "too_large"
	ReasonBadTopic      Reason = "bad_topic"
	ReasonBadJSON       Reason = "bad_json"
	ReasonBadVersion    Reason = "bad_version"
	ReasonTopicMismatch Reason = "topic_mismatch" // payload device is not the topic's: the broker's ACL ties that one to the publisher's login
	ReasonBadField      Reason = "bad_field"
	ReasonBadMetric     Reason = "bad_metric"
	ReasonStale         Reason = "stale"
	ReasonFuture        Reason = "future"
)

// Reasons lists every reason code.
var Reasons = []Reason{ReasonTooLarge, ReasonBadTopic, ReasonBadJSON, ReasonBadVersion,
	ReasonTopicMismatch, ReasonBadField, ReasonBadMetric, ReasonStale, ReasonFuture}

// Rejection is the error for a payload or topic that breaks the protocol.
// Detail names the field and what was wrong; it quotes at most a short,
// escaped prefix of the offending input, so it is safe to log and to put in a
// message header.
type Rejection struct {
	Reason Reason
	Detail string
}

func (e *Rejection) Error() string { return fmt.Sprintf("%s: %s", e.Reason, e.Detail) }

func reject(reason Reason, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Topic is a parsed MQTT topic telemetry/<region>/<device-type>/<device-id>.
type Topic struct {
	Region, DeviceType, Device string
}

// Metric is one named measurement of a reading.
type Metric struct {
	Name  string
	Value float64
}

// Reading is one measurement of a device, identified by (Device, Boot,
// Seq): a v1 message's, or one of a v2 batch's.
type Reading struct {
	Version int
	Device  string
	Boot    uint64
	Seq     uint64
	TS      int64 // unix milliseconds
	Metrics []Metric
}

// Batch is what one message carries: readings of one device and one boot
// with consecutive seqs, Readings[i].Seq = Readings[0].Seq + i. A v1
// message carries one reading, a v2 message up to MaxBatchReadings.
type Batch struct {
	Version  int
	Device   string
	Boot     uint64
	Readings []Reading // never empty in a decoded batch
}

// First and Last are the seqs of the batch's first and last readings.
func (b Batch) First() uint64 { return b.Readings[0].Seq }
func (b Batch) Last() uint64  { return b.Readings[len(b.Readings)-1].Seq }

// Limits are the time window a reading's ts must fall in, relative to now.
type Limits struct {
	MaxAge  time.Duration // how far in the past; DefaultMaxAge when zero or negative
	MaxSkew time.Duration // how far in the future; DefaultMaxSkew when zero or negative
}
