// Package mqttsub is ingest's MQTT client: one persistent session with one
// QoS 1 subscription, messages acknowledged by the caller, in order.
//
// It sits between the broker and ingest's handler, at the start of the
// bridge: broker -> mqttsub -> ingest -> JetStream. It speaks the part of
// MQTT 3.1.1 a subscriber needs (CONNECT with a persistent session,
// SUBSCRIBE, PUBLISH at QoS 0 and 1, PUBACK, PINGREQ, DISCONNECT) and
// nothing else, so that the path of one reading is a read from a buffered
// socket, one allocation for the packet, the handler, and later four bytes
// of PUBACK. A general client (paho) hands each message across three
// goroutines and allocates a packet, a message and an acknowledgement
// closure for it: about a third of ingest's CPU per reading
// (docs/INGEST.md).
//
// Backpressure: the handler runs on the reader goroutine; while it blocks,
// nothing more is read and the broker holds the rest. A PUBACK goes only
// on the connection its message came on; after a reconnect the broker
// redelivers what was not acknowledged.
//
// Bounds: a packet is kept up to MaxPacketSize (1 MiB); a larger PUBLISH is
// delivered without its payload, so that it can be acknowledged and
// accounted for instead of failing the connection at every redelivery.
package mqttsub
