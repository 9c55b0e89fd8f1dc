// Package protocol is the device wire protocol: the MQTT topic a reading is
// published on, the JSON payload it carries, and the rules that decide whether
// ingest accepts it or dead-letters it under a Reason.
//
// It sits at the very start of the flow. Devices build payloads with
// AppendEncode; ingest checks each MQTT message with Decode, which validates
// the topic, the payload and the time window; storage and the dashboard read
// already-validated messages back from JetStream with Unmarshal.
//
// Decoding dispatches on the payload's "v" field before it looks at anything
// else, so a later schema version (several readings per message, say) is a new
// decoder beside the v1 one, and old devices keep working.
//
// Decoding is a hand-written single-pass scanner: ingest decodes every reading,
// so it avoids reflection and allocates only the reading's strings and metric
// slice.
package protocol
