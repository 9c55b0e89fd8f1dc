// Package scenario runs the presenters' failure scenarios on the in-process
// demo: a region cut off from the others, a region's ingest crashing, a
// ClickHouse outage, a burst of hostile messages and a storm of device
// reboots. It sits beside the pipeline rather than in its flow: it pokes the
// pipeline through a Target (which `telemetry demo` implements) and proves
// afterwards that nothing was lost.
//
// The ledger counts the demo's own devices. The Target reports, per device
// and boot, how far each has published and how much of it the broker
// acknowledged (devices.Fleet.Sent); the runner records that at the
// scenario's start and again when its window ends (Tail after the fault is
// removed), and the readings in between, per device and boot, are the
// window's: a boot that only the second record has began in the window, at
// seq 1. The fleet keeps publishing throughout, so that the dashboard shows
// the fault and the recovery live. The runner then waits until every
// reading of the window is stored, or until nothing has moved for the drain
// timeout, reading the broker's acknowledgements again as it goes (readings
// in flight when the window ended are acknowledged later), and ends with
// the conservation ledger: sent, acknowledged, stored (distinct (device,
// boot, seq) in ClickHouse), lost (acknowledged, not stored: must be 0)
// with the missing ranges. ClickHouse is asked once per poll with every
// (device, boot) range of the window, never once per reading, so the cost
// stays bounded at load-test rates.
//
// Witness devices of the scenario's own (ids scn-*, a boot of their own)
// stay for hostile-burst and reboot-storm: the hostile messages and the
// reboots are theirs, since the demo's fleet sends neither, and their
// ledger checks each hostile message's reason. Their counts are added to
// the fleet's. The fault scenarios need none: the whole fleet is a better
// witness than a few probe devices. A Target without devices of its own
// gets witnesses in those too, which are then all the ledger counts.
//
// Each scenario marks its start, its steps and its end in an event log,
// which the presenter API (Handler, with a bearer token) serves beside the
// last ledgers, and which the dashboard can draw on its charts. Client is
// that API's client, used by `telemetry scenario`.
package scenario
