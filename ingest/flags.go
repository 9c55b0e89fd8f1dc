package ingest

import (
	"flag"
	"fmt"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/stream"
)

// RegisterFlags binds c to the flags of `telemetry ingest`, with the
// defaults New would give; call SetFlagDefaults after parsing.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Region, "region", "us-east", "the region this bridge serves")
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.StringVar(&c.Username, "mqtt-user", deploy.MQTTIngestUser, "MQTT service user of ingest (the broker lets it read every reading)")
	cli.SecretVar(fs, &c.Password, "mqtt-password", deploy.DemoMQTTIngestPassword, "MQTT password of --mqtt-user (default: the public demo default; change it with the broker's)")
	fs.StringVar(&c.Instance, "instance", "", "name of this instance when several share the region's load (e.g. 1, 2); keep it stable across restarts: the broker keeps this instance's share of the readings in its session until it returns")
	fs.StringVar(&c.ClientID, "client-id", "", "MQTT client id of the persistent session (default telemetry-ingest-<region>[-<instance>])")
	fs.StringVar(&c.Group, "group", "", "shared subscription group of the region's instances (default ingest-<region>)")
	fs.StringVar(&c.NATSURL, "nats", "", "the region's NATS server URL, as the region's ingest user (default: nats://ingest-<region>:<its public demo password>@127.0.0.1:4222)")
	fs.IntVar(&c.MaxInflight, "max-inflight", DefaultMaxInflight, "messages taken from MQTT and not yet acknowledged by JetStream; when reached, ingest stops reading (backpressure)")
	fs.DurationVar(&c.PublishTimeout, "publish-timeout", DefaultPublishTimeout, "wait for one JetStream acknowledgement before retrying")
	fs.IntVar(&c.MaxAttempts, "max-attempts", DefaultMaxAttempts, "publishes of a message JetStream refuses outright (e.g. too large for the stream) before it is dead-lettered as publish_failed")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "on shutdown, how long to keep retrying what is in flight; the rest is redelivered by the broker")
	fs.DurationVar(&c.Limits.MaxAge, "max-age", protocol.DefaultMaxAge, "oldest reading accepted (older ones are dead-lettered as stale)")
	fs.DurationVar(&c.Limits.MaxSkew, "max-skew", protocol.DefaultMaxSkew, "how far in the future a reading's ts may be (further ones are dead-lettered as future)")
}

// SetFlagDefaults fills what the flags leave to the region: the NATS URL
// as the region's ingest user with its public demo password.
func (c *Config) SetFlagDefaults() {
	if c.NATSURL == "" {
		user := stream.IngestUser(c.Region)
		c.NATSURL = fmt.Sprintf("nats://%s:%s@127.0.0.1:4222", user, stream.DemoPasswordFor(user))
	}
}
