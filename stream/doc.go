// Package stream owns the JetStream side of the pipeline: the regions, the
// streams in each, and how readings are replicated between them.
//
// Flow: ingest (one per region) publishes each valid reading to its region's
// READINGS stream on telemetry.<region>.<device-type>.<device-id>, and each
// rejected payload to DEADLETTER on deadletter.<region>.<reason>. READINGS
// in every region also sources the other regions' READINGS, filtered to
// their own subjects, so every region ends up holding every reading without
// loops. Storage and the dashboard consume READINGS in whichever region they
// are attached to.
//
// Regions are separate JetStream domains named after the region, joined as
// leaf nodes to a hub that runs no JetStream. A domain per region keeps each
// region fully independent: cut off from the hub, a region still accepts
// readings, creates consumers and serves storage, and its sources catch up
// when the link returns. (A gateway super-cluster would share one JetStream
// meta group across regions, so a region cut off from the majority could not
// create consumers, and stream names would have to be unique across regions.)
//
// Topology describes the streams declaratively; Apply creates or updates them
// idempotently. Embedded runs the hub and regions in-process for the demo and
// tests; LeafLink cuts a region off and heals it (nats-server's own switch
// on the region's leaf connection) while everything keeps running. Its
// servers check client logins through a gate of their own (logins.go) that
// holds back an address that keeps failing. Status
// says how far each region is behind each other and in which state each
// link is; Mender restarts a link nats-server leaves waiting once the other
// region answers again.
package stream
