// Package devices simulates a fleet of IoT devices: the start of the
// pipeline, and its load generator.
//
// Flow: each simulated device is its own MQTT client (own client id, clean
// session) and publishes with QoS 1 to
// telemetry/<region>/<device-type>/<device-id> on the broker: wire protocol
// v1, a message per reading, or with Config.Batch > 1 (--batch) protocol v2,
// a message per batch of the device's consecutive readings; ingest (one per
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
// and buffers only for its unacknowledged publishes and its batch in hand.
//
// Batches: a reading is measured when it falls due (and a slot of
// MaxInflight is free) into the device's batch in hand, which is published
// when it holds Batch readings, when its first reading has waited
// BatchWait (default a second, one timer per device, so that a device
// reporting every few seconds is not held back), before the device
// reboots (a batch holds one boot), before a reading with other metric
// names than the batch's, and when the fleet stops (Close, cancel or the
// end of Duration: nothing measured is left unsent). The rate stays in
// readings per second. Counts are of readings: Sent, Acked and the ledger
// of Sent count every reading of a batch, and one PUBACK acknowledges them
// all; the PUBACK latency is recorded once per reading, from when it was
// measured, so the wait for the batch shows.
//
// Delivery is at least once from the device: a reading stays with its
// device until the broker acknowledges it. When a connection drops, the
// device reconnects (with backoff) as soon as it has something to publish
// and publishes its unacknowledged messages again, byte for byte (a batch
// keeps its boundaries, and so its Nats-Msg-Id), so the broker may see a
// reading twice, and downstream deduplicates on (device, boot, seq). Sent
// reports, per device and boot, the readings published and how many of
// them, from seq 1 on, were acknowledged.
//
// Devices misbehave on request, each behaviour a chance per reading drawn
// from a random source of the device's own (deterministic under Seed):
// reboots (a new boot, seq from 1), duplicates (a reading published twice),
// reordering (a reading held back and published after the next) and clock
// skew (a fixed offset per device); with batches, duplicates and
// reordering act on messages. Config.IDPrefix keeps two fleets on one
// broker apart (the bench's devices are bench-th-00001, ...).
//
// Config.Chaos replaces a share of the readings by hostile messages built
// from the schema (chaos.go): malformed JSON, wrong types, values out of
// range or not finite, oversized payloads, a device that is not the
// topic's, unknown versions, odd names with unicode and control
// characters, deep nesting; with Batch > 1 also v2 batches with one bad
// reading among good ones (a bad value, a row of the wrong length, a stale
// or future ts), too many readings, over 64 KiB, seq 0. Each case is
// tagged with the reason code the pipeline must dead-letter it under, and
// each message carries a marker (ChaosMarker) so that the bench can find
// it in DEADLETTER and check the reason it got.
package devices
