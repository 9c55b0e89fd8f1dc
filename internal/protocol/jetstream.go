package protocol

import (
	"fmt"
	"strings"
)

// The JetStream side of the contract (docs/PROTOCOL.md): the subjects
// ingest stores readings and dead letters under, and the headers it sets.
// Every package that reads or writes them uses these.

// Headers ingest sets on JetStream messages.
const (
	// HeaderReceived is when ingest took the MQTT message, unix ms (its
	// clock): on readings and dead letters.
	HeaderReceived = "Telemetry-Received"
	// HeaderReason is a dead letter's reason code (Reason).
	HeaderReason = "Telemetry-Reason"
	// HeaderTopic is the MQTT topic a dead letter arrived on.
	HeaderTopic = "Telemetry-Topic"
	// HeaderDetail says what exactly was wrong, for a person.
	HeaderDetail = "Telemetry-Detail"
	// HeaderOmitted is set, to the original size in bytes, on a dead letter
	// whose body JetStream refused even in DEADLETTER: it is kept without
	// its body rather than retried forever.
	HeaderOmitted = "Telemetry-Omitted-Bytes"
)

const deadLetterRoot = "deadletter"

// ReadingsOf is the subject filter of region's own readings:
// telemetry.<region>.>.
func ReadingsOf(region string) string { return topicRoot + "." + region + ".>" }

// DeadLettersOf is the subject filter of region's dead letters:
// deadletter.<region>.>.
func DeadLettersOf(region string) string { return deadLetterRoot + "." + region + ".>" }

// DeadLetterSubject is the subject a payload rejected in region for
// reason is stored under: deadletter.<region>.<reason>.
func DeadLetterSubject(region string, reason Reason) string {
	return deadLetterRoot + "." + region + "." + string(reason)
}

// ParseSubject reads a reading's subject,
// telemetry.<region>.<device-type>.<device-id> (Topic.Subject), each name
// as the topic's rules want it.
func ParseSubject(s string) (Topic, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != topicRoot {
		return Topic{}, fmt.Errorf("subject %q is not telemetry.<region>.<device-type>.<device-id>", s)
	}
	for _, p := range parts[1:] {
		if !validName(p) {
			return Topic{}, fmt.Errorf("subject %q: %q does not match %s", s, p, namePattern)
		}
	}
	return Topic{Region: parts[1], DeviceType: parts[2], Device: parts[3]}, nil
}
