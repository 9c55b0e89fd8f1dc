// Package protocol is the device wire protocol: the MQTT topic a reading is
// published on, the JSON payload it carries (v1: one reading; v2: a batch of
// one device's consecutive readings), and the rules that decide whether
// ingest accepts it or dead-letters it under a Reason.
//
// It sits at the very start of the flow. Devices build payloads with
// AppendEncode (v1) or AppendEncodeBatch (v2); ingest checks each MQTT
// message with Decode, which validates the topic, the payload and the time
// window; storage, the dashboard and the bench read already-validated
// messages back from JetStream with Unmarshal. Both return a Batch, a v1
// reading as a batch of one, so that every stage has one path for both.
//
// Decoding dispatches on the payload's "v" field before it looks at anything
// else, so each schema version is a decoder of its own (v1.go, v2.go), and
// old devices keep working.
//
// Decoding is a hand-written single-pass scanner: ingest decodes every reading,
// so it avoids reflection and allocates only the reading's strings and metric
// slice.
package protocol
