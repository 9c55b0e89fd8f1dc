package dashboard

import (
	"time"

	"github.com/telemetry-demo/telemetry/ledger"
)

// Snapshot is everything the page shows, as served at /api/snapshot and
// pushed on /ws. Counts are since the dashboard started, except dead
// letters, which are counted from the start of each region's DEADLETTER.
type Snapshot struct {
	// Seq increases by one per push, so a client can tell snapshots apart.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Domain is the region whose READINGS the dashboard reads: HomeDomain
	// (Config.Domain), or one of Config.Fallbacks while that is gone.
	Domain     string `json:"domain"`
	HomeDomain string `json:"home_domain"`
	// WindowSeconds is the sliding window of rates, latencies and metrics.
	WindowSeconds float64          `json:"window_seconds"`
	NATS          NATSState        `json:"nats"`
	Regions       []RegionSnapshot `json:"regions"`
	Replication   []ReplicationLag `json:"replication"`
	Storage       StorageState     `json:"storage"`
	OtherReadings uint64           `json:"other_readings"` // readings of regions not in Config.Regions
	Undecodable   uint64           `json:"undecodable"`    // READINGS messages that did not parse
	Clients       int              `json:"clients"`        // websocket clients connected
	// Presenter is Config.Presenter: the presenter API is served beside
	// the page, which then offers its panel (and asks for the token).
	Presenter bool `json:"presenter"`
	// Join is Config.Join: phones may join at /join.
	Join bool `json:"join"`
	// Scenarios are the markers of the last presenter scenarios, oldest
	// first; Ledger is the last finished one's ledger, nil while a
	// scenario runs and before the first ends.
	Scenarios []ScenarioMarker `json:"scenarios"`
	Ledger    *ScenarioLedger  `json:"ledger"`
}

// NATSState is the dashboard's connection to the region it reads from
// (Snapshot.Domain): its own region's, or a fallback's while failed over.
type NATSState struct {
	Connected bool   `json:"connected"`
	Status    string `json:"status"`           // nats.Conn status, e.g. CONNECTED, RECONNECTING
	Readings  string `json:"readings"`         // state of the READINGS consumer: "ok" or what is wrong
	Error     string `json:"error,omitempty"`  // last connection error
	Server    string `json:"server,omitempty"` // URL of the server connected to
}

// RegionSnapshot is one region's card.
type RegionSnapshot struct {
	Region string `json:"region"`
	// Rate is readings per second over the window.
	Rate float64 `json:"rate"`
	// Total is readings seen since the dashboard started.
	Total         uint64 `json:"total"`
	ActiveDevices int    `json:"active_devices"`
	// ActivePhones are the active devices of type phone: the audience's
	// (package join).
	ActivePhones int     `json:"active_phones"`
	Latency      Latency `json:"latency_ms"`
	// Rejected counts dead letters by reason.
	Rejected      map[string]uint64 `json:"rejected"`
	RejectedTotal uint64            `json:"rejected_total"`
	// DeadLetters is "ok" when the region's DEADLETTER is reachable,
	// otherwise what is wrong ("connecting", "unreachable: ...").
	DeadLetters string `json:"deadletters"`
	// Reachable is whether the region's JetStream answers the dashboard
	// (through the hub, for a region other than Domain); asked every few
	// seconds. UnreachableSince is when it stopped answering, zero while
	// it answers or before the first answer.
	Reachable        bool      `json:"reachable"`
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
	// LastReading is when the latest reading of the region arrived, zero
	// before the first.
	LastReading time.Time `json:"last_reading,omitzero"`
	// Ingest is what the region's ingest last said (its heartbeat), nil
	// when not heard lately.
	Ingest *IngestState `json:"ingest,omitempty"`
	// Alert, when not empty, is why the region is not doing its job, for
	// the card in red: its ingest cannot publish ("READINGS full in
	// us-east: ..."), or its READINGS dropped readings storage had not
	// stored (Config.Alerts).
	Alert string `json:"alert,omitempty"`
	// Metrics are per device type and metric name, sorted by name then
	// device type.
	Metrics []MetricStats `json:"metrics"`
}

// Latency is end to end, from the ts a device stamped to arrival at the
// dashboard, in milliseconds, over the window. Samples is 0 when there were
// no readings in the window; the percentiles are then 0 and meaningless.
type Latency struct {
	P50     float64 `json:"p50"`
	P99     float64 `json:"p99"`
	Samples int     `json:"samples"`
}

// MetricStats aggregates one metric of one device type in one region over
// the window. P95 is by nearest rank over the window's latest values (at
// most 512 of them).
type MetricStats struct {
	DeviceType string  `json:"device_type"`
	Name       string  `json:"name"`
	Count      uint64  `json:"count"`
	Avg        float64 `json:"avg"`
	Min        float64 `json:"min"`
	Max        float64 `json:"max"`
	P95        float64 `json:"p95"`
}

// ReplicationLag is how far region To's copy of region From's readings is
// behind. It is provided by Config.Replication.
type ReplicationLag struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Messages is how many of From's readings To has not copied yet.
	Messages uint64 `json:"messages"`
	// Seconds is how much of From's history To misses: the time between
	// the newest reading of From that To holds and From's newest.
	Seconds float64 `json:"seconds"`
	// HeardAgo is how long since To last heard from From at all (a
	// reading or the link's heartbeat), in seconds; -1 when never or
	// unknown. It grows during a cut.
	HeardAgo float64 `json:"heard_ago"`
	// Connected is false while the link between the two is down.
	Connected bool `json:"connected"`
	// State is up, idle, catching up or down (stream.LinkUp, ...).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Storage states besides the ones the storage service reports itself.
const (
	StorageOff     = "off"     // no StorageURL: the demo runs without ClickHouse
	StorageOffline = "offline" // StorageURL does not answer
	StorageUnknown = "unknown" // not asked yet
)

// StorageState is the storage writer's state from its /api/status.
type StorageState struct {
	// State is StorageOff, StorageOffline, StorageUnknown or what the
	// storage service says ("ok", "retrying", ...).
	State string `json:"state"`
	// Reason says why storage is off or offline.
	Reason          string `json:"reason,omitempty"`
	RowsStored      uint64 `json:"rows_stored"`
	ReadingsStored  uint64 `json:"readings_stored"`
	LastInsert      string `json:"last_insert,omitempty"`
	ConsumerPending uint64 `json:"consumer_pending"`
	Error           string `json:"error,omitempty"`
	// Region is the region whose READINGS storage consumes: HomeRegion,
	// or a fallback while that is gone. Failovers counts its changes of
	// region, moves back home included. Empty for a storage that does not
	// say.
	Region     string `json:"region,omitempty"`
	HomeRegion string `json:"home_region,omitempty"`
	Failovers  uint64 `json:"failovers,omitempty"`
	// Discarded counts readings READINGS dropped (its budget) before
	// storage read them: lost, each listed by the ledger.
	Discarded uint64    `json:"discarded,omitempty"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
	// Since is when State last changed, as seen by the dashboard's polls
	// (zero while storage is off).
	Since time.Time `json:"since,omitzero"`
}

// ScenarioMarker marks one run of a presenter scenario (package scenario)
// on the page's charts: a band from Start to End, labelled with Scenario.
type ScenarioMarker struct {
	Run      int       `json:"run"`
	Scenario string    `json:"scenario"`
	Start    time.Time `json:"start"`
	// End is zero while the scenario runs.
	End time.Time `json:"end,omitzero"`
	// Phase is what the scenario last said it was doing: its start text,
	// then each step (the fault, the recovery), then its summary.
	Phase string `json:"phase"`
}

// ScenarioLedger is the conservation ledger a finished scenario ends with,
// counted over its witness devices: the page shows it big, green when
// nothing was lost, red otherwise.
type ScenarioLedger struct {
	Run      int       `json:"run"`
	Scenario string    `json:"scenario"`
	Label    string    `json:"label"` // the request, e.g. "cut-region eu-west"
	End      time.Time `json:"end"`
	// Counts are the scenario's readings: the pipeline owes each one the
	// broker acknowledged.
	ledger.Counts
	// Quarantined are dead letters (hostile messages), never dropped, of
	// HostileSent sent.
	Quarantined uint64 `json:"quarantined"`
	HostileSent uint64 `json:"hostile_sent"`
	// Duplicates JetStream suppressed during the scenario, and the
	// devices with the most (at most 3, most first): a resend, or a reading
	// forged with a real one's identity, shows here instead of vanishing.
	Duplicates    uint64   `json:"duplicates_suppressed"`
	DuplicatedTop []string `json:"duplicated_top,omitempty"` // "device count"
	// OK is the scenario's verdict: nothing lost, every hostile message
	// quarantined under its reason, no error. Error says why not.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}
