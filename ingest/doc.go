// Package ingest is the bridge from MQTT to JetStream for one region.
//
// Flow: devices publish v1 readings with QoS 1 to the broker on
// telemetry/<region>/<device-type>/<device-id>. The instances of a region's
// ingest join the shared subscription $share/ingest-<region>/telemetry/<region>/#,
// each with its own persistent session (client id from --instance) and
// manual acknowledgement; the broker gives each message to one of them.
// Ingest decodes and validates each payload (internal/protocol), publishes it
// asynchronously to the region's JetStream: valid readings to READINGS on
// telemetry.<region>.<device-type>.<device-id> with the reading's identity
// (device:boot:seq) as Nats-Msg-Id, rejected payloads to DEADLETTER on
// deadletter.<region>.<reason> with the original bytes and the reason in
// headers. Only when JetStream has acknowledged a message is the MQTT
// message acknowledged, in the order received; until then the broker keeps
// it, and redelivers it if ingest dies. Redeliveries collapse in JetStream
// through the message id.
//
// Backpressure, not buffering: at most MaxInflight messages are between the
// broker and a JetStream acknowledgement. When the queue is full the MQTT
// handler blocks, the MQTT client (paho, mqtt.go) stops reading, and the
// broker holds the rest.
// Transient publish failures are retried for as long as ingest runs; a
// message JetStream refuses outright is isolated after MaxAttempts (dead-
// lettered as publish_failed), so that it cannot stall the in-order
// acknowledgements. docs/INGEST.md has the guarantees and measurements.
package ingest
