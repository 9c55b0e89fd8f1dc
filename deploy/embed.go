// Package deploy holds the configuration files that compose mounts, embedded
// so that `telemetry demo` and the tests run the servers from the very same
// files.
package deploy

import "embed"

// NATS holds nats/*.conf: accounts.conf, region.conf and hub.conf.
//
//go:embed nats/*.conf
var NATS embed.FS

// MosquittoPasswd is mosquitto/passwd, the MQTT users and their passwords
// hashed in Mosquitto's format, and MosquittoACL is mosquitto/acl, what
// each user may publish and read. Compose's Mosquitto loads both, and so
// does the embedded broker of `telemetry demo`.
var (
	//go:embed mosquitto/passwd
	MosquittoPasswd []byte
	//go:embed mosquitto/acl
	MosquittoACL []byte
)

// The MQTT service users of mosquitto/passwd and their DEMO DEFAULT
// passwords, and the devices' DEMO DEFAULT fleet secret. These are public:
// change them (mosquitto_passwd, --mqtt-ingest-password, --fleet-secret)
// before exposing the broker beyond this laptop (README, "Security"). A
// test checks the committed file against them.
const (
	// MQTTIngestUser is ingest's service user: it reads every reading.
	MQTTIngestUser         = "ingest"
	DemoMQTTIngestPassword = "ingest"
	// MQTTHealthUser is compose's healthcheck. Its password stays public:
	// it may read $SYS/broker/uptime and nothing else.
	MQTTHealthUser     = "health"
	MQTTHealthPassword = "health"
	// DemoFleetSecret is the secret every device's MQTT password is derived
	// from (internal/devicecred): a device logs in as
	// <region>/<device-type>/<device-id>, and may publish only on
	// telemetry/<that> (mosquitto/acl).
	DemoFleetSecret = "demo-fleet-secret-change-me"
	// MQTTJoinUser is the dashboard's join service on Mosquitto: the one
	// client of Mosquitto's dynamic security plugin that may send it
	// commands, to make a client for each phone that joins (package join).
	MQTTJoinUser         = "join"
	DemoMQTTJoinPassword = "join-dynsec-demo"
)
