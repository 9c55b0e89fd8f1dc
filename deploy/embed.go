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

// The MQTT users of mosquitto/passwd and their DEMO DEFAULT passwords.
// These passwords are public: change them (mosquitto_passwd, and the
// --mqtt-password of devices and ingest) before exposing the broker beyond
// this laptop (README, "Security"). A test checks the committed file
// against them.
const (
	// MQTTDeviceUser is the fleet's user: every device connects with it,
	// and its MQTT client id, its device id, decides the one topic it may
	// publish to (mosquitto/acl).
	MQTTDeviceUser         = "device"
	DemoMQTTDevicePassword = "device"
	// MQTTIngestUser is ingest's service user: it reads every reading.
	MQTTIngestUser         = "ingest"
	DemoMQTTIngestPassword = "ingest"
	// MQTTHealthUser is compose's healthcheck. Its password stays public:
	// it may read $SYS/broker/uptime and nothing else.
	MQTTHealthUser     = "health"
	MQTTHealthPassword = "health"
)
