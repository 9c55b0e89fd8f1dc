// Package pipeline assembles the whole pipeline in one process: the demo,
// `telemetry bench --demo` and the scenarios' target.
//
// Flow: simulated devices publish to an embedded MQTT broker
// (internal/broker); one ingest per region (package ingest) forwards their
// readings to that region's JetStream (package stream: one embedded
// nats-server per region, joined through a hub); storage (package storage)
// writes them to ClickHouse, started from PATH when no address is given;
// the dashboard (package dashboard) shows them live. Pipeline is every
// part but the devices and the dashboard; Demo adds those, the presenter
// API and its scenarios (package scenario), whose faults Target applies to
// a running Pipeline: a region cut off, an ingest crashed and restarted,
// ClickHouse killed and restarted.
//
// Each ingest runs in a slot that a scenario may empty and fill again, and
// reaches the broker through a stream.Link, so that crashing it drops its
// connection with nothing in flight acknowledged.
package pipeline
