package deploy

import _ "embed" // for ClickHouseUsers

// ClickHouseUsers is clickhouse/users.d/telemetry.xml, the ClickHouse users
// of the pipeline. Compose mounts it into the ClickHouse image's users.d,
// and internal/chserver gives it to every ClickHouse that `telemetry demo`
// and the tests start.
//
//go:embed clickhouse/users.d/telemetry.xml
var ClickHouseUsers []byte

// ClickHouseUsersFile is the name under users.d that ClickHouseUsers goes by.
const ClickHouseUsersFile = "telemetry.xml"

// ClickHouseServerConfig is clickhouse/config.d/telemetry.xml, the server
// settings that keep ClickHouse's disk level over a long run (replaced parts
// removed within a minute). Compose mounts it into the ClickHouse image's
// config.d, and internal/chserver gives it to every ClickHouse that
// `telemetry demo` and the tests start.
//
//go:embed clickhouse/config.d/telemetry.xml
var ClickHouseServerConfig []byte

// ClickHouseServerConfigFile is the name under config.d that
// ClickHouseServerConfig goes by.
const ClickHouseServerConfigFile = "telemetry.xml"

// The ClickHouse users of clickhouse/users.d/telemetry.xml and their DEMO
// DEFAULT passwords. These passwords are public: change them (the hashes in
// the file, and storage's --clickhouse-password and --history-password)
// before a ClickHouse is reachable beyond this laptop (README, "Security").
// A test checks the file's hashes against them.
const (
	// ClickHouseWriterUser is storage's writer: it migrates the schema,
	// inserts and reads back, in the telemetry database only.
	ClickHouseWriterUser         = "telemetry_writer"
	DemoClickHouseWriterPassword = "telemetry-writer-demo"
	// ClickHouseReaderUser serves storage's /api/history, the dashboard's
	// history: read-only (readonly=1), telemetry database only.
	ClickHouseReaderUser         = "telemetry_reader"
	DemoClickHouseReaderPassword = "telemetry-reader-demo"
)
