// Package scenario runs the presenters' failure scenarios on the in-process
// demo: a region cut off from the others, a region's ingest crashing, a
// ClickHouse outage, a burst of hostile messages and a storm of device
// reboots. It sits beside the pipeline rather than in its flow: it pokes the
// pipeline through a Target (which `telemetry demo` implements) and proves
// afterwards that nothing was lost.
//
// Every scenario runs a small fleet of witness devices of its own (ids
// scn-*, a boot of their own) through the pipeline while the fault lasts,
// then waits for the pipeline to drain and ends with the witnesses'
// conservation ledger: sent, acknowledged by the broker, stored in
// ClickHouse, quarantined (dead-lettered) and lost, which must be 0. The
// demo's own devices keep publishing meanwhile, so the dashboard shows the
// fault and the recovery.
//
// Each scenario marks its start, its steps and its end in an event log,
// which the presenter API (Handler, with a bearer token) serves beside the
// last ledgers, and which the dashboard can draw on its charts. Client is
// that API's client, used by `telemetry scenario`.
package scenario
