// Package bench is the load test (`telemetry bench`): it sits beside the
// pipeline, not in its flow. It drives a fleet of simulated devices
// (package devices) into the pipeline's MQTT broker, watches every stage
// a reading passes (the broker's PUBACK, READINGS in the device's own
// region and in every other region, the home region's feed that the
// dashboard reads, ClickHouse), waits until the pipeline has drained, and
// prints the conservation ledger: sent, acknowledged, stored, dead-lettered
// by reason, lost (which must be 0) with the missing ranges.
//
// Beside the ledger it reports the latency of each hop from the reading's
// measurement as HDR histograms corrected for coordinated omission (also
// written as an HdrHistogram log that merges with other runs'), what queued
// at each stage at its peak and so which stage limited the run, the
// pipeline process's CPU and memory, and, with Config.Ceiling, the same
// fleet against a bare broker in the same run, so that the pipeline's pace
// reads as a share of the broker's.
//
// With no addresses it targets the local demo (`telemetry demo`'s
// defaults), and says plainly when nothing listens there.
package bench
