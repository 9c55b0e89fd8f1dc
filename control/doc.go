// Package control lets the presenters' scenarios act on a pipeline whose
// parts run as separate processes, as in compose, where no process may
// reach another's container (none holds the Docker socket). It sits beside
// the pipeline, not in its flow.
//
// Every connection a scenario cuts passes through the relay (Relay,
// `telemetry relay`): each ingest's MQTT connection (kill-ingest), each
// region's leaf connection to the hub (cut-region) and storage's
// connections to ClickHouse (clickhouse-outage). A relay link is a
// stream.Link: cut, it drops its connections with nothing in flight
// acknowledged and refuses new ones, while both ends keep running; healed,
// the ends reconnect on their own.
//
// The scenarios ask the relay over NATS (subject RelaySubject), with
// requests signed with the presenter token (HMAC-SHA256): the relay, which
// holds the same token, refuses an unsigned, wrongly signed, stale or
// replayed request, and refuses everything when it has no token. NATS
// permissions add a second lock: only the dashboard user may publish on
// the subject and only the relay user may subscribe to it
// (deploy/nats/accounts.conf). A cut heals itself when its window (at most
// MaxWindow) has passed, should the request to heal it never arrive.
//
// Target is the scenarios' target on such a pipeline (scenario.Target):
// faults through the relay, witness devices of its own for the ledger
// (a bench run, as the demo's), read back from ClickHouse.
package control
