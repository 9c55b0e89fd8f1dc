// Package devices simulates a fleet of IoT devices: the start of the
// pipeline, and its load generator.
//
// Flow: each simulated device is its own MQTT client (own client id, clean
// session) and publishes wire protocol v1 readings with QoS 1 to
// telemetry/<region>/<device-type>/<device-id> on the broker; ingest (one per
// region) takes them from there to JetStream. `telemetry demo` runs a small
// fleet to have something moving, `telemetry devices` runs one on its own, and
// `telemetry bench` drives thousands of devices and uses Sent to work out what
// should have reached storage.
//
// Every device has a sensor model (thermostat, vibration, tracker) whose
// values are believable and, for a given Seed and the same measuring times,
// deterministic. Readings of a device carry one boot (Config.Boot) and a
// sequence number from 1 with no gaps, so that a consumer can tell a lost
// reading from a duplicate.
//
// One scheduler holds the fleet's total rate: on every tick it works out how
// many readings are due since the start and hands them out round-robin over
// the devices as a per-device count. A device publishes what it owes as long
// as fewer than MaxInflight of its publishes are unacknowledged (policy
// "wait, then skip": at the limit it waits for a PUBACK; what falls due
// meanwhile is owed, up to MaxBacklog readings, and due readings beyond that
// are skipped before being generated, so sequence numbers stay gapless and
// the skip is counted). A device costs one goroutine besides its MQTT client,
// no timer, and buffers only for its unacknowledged publishes.
//
// Delivery is at least once from the device: a reading stays with its
// device until the broker acknowledges it. When a connection drops, the
// device reconnects (with backoff) as soon as it has something to publish
// and publishes its unacknowledged readings again, so the broker may see a
// reading twice, and downstream deduplicates on (device, boot, seq). Sent
// reports, per device and boot, the readings published and how many of
// them, from seq 1 on, were acknowledged.
//
// Devices misbehave on request, each behaviour a chance per reading drawn
// from a random source of the device's own (deterministic under Seed):
// reboots (a new boot, seq from 1), duplicates (a reading published twice),
// reordering (a reading held back and published after the next) and clock
// skew (a fixed offset per device). Config.IDPrefix keeps two fleets on one
// broker apart (the bench's devices are bench-th-00001, ...).
//
// Config.Chaos replaces a share of the readings by hostile messages built
// from the schema (chaos.go): malformed JSON, wrong types, values out of
// range or not finite, oversized payloads, a device that is not the
// topic's, unknown versions, odd names with unicode and control
// characters, deep nesting. Each case is tagged with the reason code the
// pipeline must dead-letter it under, and each message carries a marker
// (ChaosMarker) so that the bench can find it in DEADLETTER and check the
// reason it got.
package devices
