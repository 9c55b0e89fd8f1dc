// Package dashboard is the end of the live path: it watches JetStream and
// shows, on a projector, what the pipeline is doing right now.
//
// Flow: devices publish over MQTT, ingest validates each payload and writes
// it to READINGS in its region (or to DEADLETTER with a reason), READINGS in
// every region sources the others, storage writes it all to ClickHouse. The
// dashboard attaches to one region (its JetStream domain) and reads:
//
//   - READINGS there with an ordered consumer from "new": every region's
//     readings, aggregated per region into readings per second, active
//     devices, end-to-end latency (arrival here minus the ts the device
//     stamped) and, per device type and metric, avg/min/max/p95 over a
//     short sliding window;
//   - DEADLETTER of every region, across domains through the leaf hub, with
//     one ordered consumer per region reading headers only from the start of
//     the stream, so rejected payloads are counted by reason even after a
//     restart; a region that cannot be reached is retried and shown as
//     unreachable, with since when. They read through the server READINGS
//     is read from, so they follow a failover, resuming by stream sequence;
//   - the storage writer's /api/status, polled, or "off" with the reason when
//     the demo runs without ClickHouse; GET /api/history is forwarded to the
//     storage service (per-minute rollups for the page's history chart), or
//     answered "history unavailable: storage off/offline".
//
// Every PushInterval it builds a Snapshot, serves it at /api/snapshot and
// pushes it to every websocket client on /ws. Each client has a small queue;
// a client that falls behind is disconnected rather than waited for (its
// browser reconnects and gets the next full snapshot, so nothing is lost to
// the viewer). The page at / is embedded in the binary and needs no network.
//
// Beside the pipeline, the demo feeds it the presenter scenarios (package
// scenario) with MarkScenario and ShowLedger: the page marks each run on
// its charts and ends it with the conservation ledger on screen. With
// Config.Presenter the page also offers the presenter panel, which calls the
// scenario API served beside it, with a token the presenter types.
package dashboard
