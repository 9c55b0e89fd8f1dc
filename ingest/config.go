package ingest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Config configures one instance of a region's bridge. Tests build it
// directly.
type Config struct {
	Region string
	// Broker is the MQTT broker URL, tcp://host:port.
	Broker string
	// Username and Password are ingest's MQTT service credentials; default
	// deploy.MQTTIngestUser and its DEMO DEFAULT password. The broker's ACL
	// lets this user read every reading and publish nothing.
	Username string
	Password string
	// Instance tells apart the instances that share a region's load. It
	// must be stable across restarts: it names the persistent MQTT session,
	// and the broker keeps that session's share of the messages (those in
	// flight and those routed to it while it is away) for it alone.
	Instance string
	// ClientID is the MQTT client id of the persistent session; default
	// telemetry-ingest-<region>, or telemetry-ingest-<region>-<instance>.
	ClientID string
	// Group is the shared-subscription group the instances of a region
	// join; default ingest-<region>. Each message goes to one member.
	Group string

	// NATSURL is the region's NATS server. Publishing needs no JetStream
	// domain: the subject is the region's stream's own, answered by the
	// server ingest is connected to.
	NATSURL string

	// MaxInflight bounds the messages taken from MQTT and not yet
	// acknowledged by JetStream. Policy: block (backpressure to the broker).
	MaxInflight int
	// PublishTimeout bounds the wait for one JetStream acknowledgement
	// before the publish is retried with the same message id.
	PublishTimeout time.Duration
	// RetryBackoff is the first pause between publish retries; it doubles up
	// to MaxRetryBackoff. Transient failures (timeouts, NATS unreachable, a
	// full stream) are retried until JetStream accepts or ingest stops: the
	// reading stays unacknowledged in MQTT meanwhile.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// MaxAttempts bounds the publishes of one message that JetStream
	// refuses outright (an API error with a 4xx code, such as a message too
	// large for the stream). After that many the message is isolated:
	// dead-lettered as publish_failed with the error as detail, so one
	// poison message cannot stall the in-order acknowledgements.
	MaxAttempts int
	// DrainTimeout bounds how long a stopping ingest keeps retrying what is
	// in flight; what is still unconfirmed then stays unacknowledged in
	// MQTT and is redelivered.
	DrainTimeout time.Duration

	Limits protocol.Limits
	// Now is the clock payloads are judged against (stale, future);
	// default time.Now. Tests set it to replay golden payloads.
	Now func() time.Time
}

// Defaults of Config's bounds, for the flags of `telemetry ingest` too.
const (
	DefaultMaxInflight    = 1024
	DefaultPublishTimeout = 5 * time.Second
	DefaultMaxAttempts    = 3
	DefaultDrainTimeout   = 10 * time.Second
)

func (c *Config) setDefaults() {
	if c.Username == "" {
		c.Username = deploy.MQTTIngestUser
	}
	if c.Password == "" {
		c.Password = deploy.DemoMQTTIngestPassword
	}
	if c.ClientID == "" {
		c.ClientID = "telemetry-ingest-" + c.Region
		if c.Instance != "" {
			c.ClientID += "-" + c.Instance
		}
	}
	if c.Group == "" {
		c.Group = "ingest-" + c.Region
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 50 * time.Millisecond
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case !protocol.ValidName(c.Region):
		return fmt.Errorf("ingest: region %q: want lower-case letters, digits and dashes", c.Region)
	case c.Instance != "" && !protocol.ValidName(c.Instance):
		return fmt.Errorf("ingest: instance %q: want lower-case letters, digits and dashes", c.Instance)
	case c.Group == "" || strings.ContainsAny(c.Group, "/+#"):
		return fmt.Errorf("ingest: shared subscription group %q: must not be empty or contain / + #", c.Group)
	case c.Broker == "":
		return errors.New("ingest: MQTT broker URL is required")
	case !validBrokerURL(c.Broker):
		return fmt.Errorf("ingest: MQTT broker %q: want tcp://host:port, or ssl://host:port for TLS", c.Broker)
	case c.NATSURL == "":
		return errors.New("ingest: NATS URL is required")
	case c.MaxInflight < 1:
		return errors.New("ingest: max in-flight must be at least 1")
	case c.MaxAttempts < 1:
		return errors.New("ingest: max attempts must be at least 1")
	case c.PublishTimeout < 0 || c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 || c.DrainTimeout < 0:
		return errors.New("ingest: timeouts and backoffs must not be negative")
	}
	return nil
}

// Topic is the shared subscription the instances of cfg's region join:
// $share/<group>/telemetry/<region>/#.
func (c Config) Topic() string {
	c.setDefaults()
	return "$share/" + c.Group + "/telemetry/" + c.Region + "/#"
}
