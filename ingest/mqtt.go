package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// MQTT client settings of ingest's paho client. Keep-alive: paho sends a
// PINGREQ when nothing was sent or received for KeepAlive and gives the
// connection up when the PINGRESP takes longer than pingTimeout.
const (
	mqttKeepAlive      = 30 * time.Second
	mqttPingTimeout    = 20 * time.Second
	mqttConnectTimeout = 10 * time.Second
	// mqttRetry is the pause before connecting again after a failed
	// attempt; paho doubles it up to mqttMaxRetry after a lost connection.
	mqttRetry    = time.Second
	mqttMaxRetry = 5 * time.Second
	// resubscribeEvery is how often a connection whose subscription the
	// broker refused asks again (an ACL may be fixed meanwhile).
	resubscribeEvery = 5 * time.Second
	// disconnectQuiesce is how long Disconnect lets paho send what is
	// queued (the last PUBACKs) before DISCONNECT.
	disconnectQuiesce = 250
)

// mqttMessage is what the handler gets of one PUBLISH: paho's message,
// whose Ack sends the PUBACK on the connection it came on or nowhere.
type mqttMessage = paho.Message

// mqttClient is ingest's side of the broker: paho with one persistent QoS 1
// subscription (Config.Topic) and manual acknowledgement
// (SetAutoAckDisabled), as telegraf's mqtt_consumer uses it.
//
// paho calls the handler on its router goroutine, one message at a time,
// in the order they arrived (SetOrderMatters(true)). The handler blocks when
// MaxInflight messages await JetStream: paho then stops reading, and the
// broker holds the rest. It blocks only while JetStream is behind:
// Mosquitto's in-flight window (max_inflight_messages 1000) is below
// MaxInflight, and the embedded broker's flow hook lets up to 1,024 be in
// flight, so under a burst the handler waits for JetStream's next
// acknowledgements, milliseconds. When JetStream is unreachable for
// longer, paho's reader is held too,
// a PINGRESP is not read and paho drops the connection after
// mqttKeepAlive + mqttPingTimeout (eclipse-paho/paho.mqtt.golang#208,
// #453: a handler must not block). That loses nothing: the PUBACKs of the
// messages in flight are dropped with the connection (paho sends an ack
// only on the connection its message came on, router.go), and the broker
// redelivers those messages on the next connection, where JetStream's
// message id collapses them.
type mqttClient struct {
	cfg    Config
	log    *slog.Logger
	client paho.Client

	subscribed atomic.Bool
	// stopped is closed by disconnect: a subscription still being asked
	// for stops asking.
	stopped  chan struct{}
	stopOnce sync.Once
	// failed counts a failed attempt to connect (the metric); lastFailure
	// keeps the log to one line per distinct reason.
	failed      func()
	mu          sync.Mutex
	lastFailure string
}

// newMQTTClient builds the client for cfg, validated; connect starts it.
// handle gets each message in arrival order.
func newMQTTClient(cfg Config, handle func(mqttMessage), failed func(), log *slog.Logger) *mqttClient {
	m := &mqttClient{cfg: cfg, log: log, failed: failed, stopped: make(chan struct{})}
	opts := paho.NewClientOptions().
		SetProtocolVersion(4).
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		// The broker keeps the session (subscription and the messages not
		// acknowledged) while ingest is away.
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetKeepAlive(mqttKeepAlive).
		SetPingTimeout(mqttPingTimeout).
		SetConnectTimeout(mqttConnectTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(mqttRetry).
		SetMaxReconnectInterval(mqttMaxRetry).
		// A resumed session delivers before ingest subscribes again: the
		// default handler takes every message, whatever route.
		SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) { handle(msg) }).
		SetOnConnectHandler(m.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			m.subscribed.Store(false)
			log.Warn("MQTT connection lost", "err", err)
		}).
		SetConnectionNotificationHandler(m.notified).
		// paho reads through a buffer and writes in batches: a
		// bufferedConn (conn.go).
		SetCustomOpenConnectionFn(dialMQTT)
	m.client = paho.NewClient(opts)
	return m
}

// mqttSchemes are the broker URL schemes dialMQTT knows: plain TCP, then
// TLS.
var mqttSchemes = []string{"tcp", "mqtt", "ssl", "tls", "mqtts", "tcps"}

// validBrokerURL reports whether broker is a URL dialMQTT can dial.
func validBrokerURL(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && u.Host != "" && slices.Contains(mqttSchemes, u.Scheme)
}

// dialMQTT opens a connection to the broker at uri, TLS for ssl://, tls://
// and mqtts://, as a bufferedConn.
func dialMQTT(uri *url.URL, opts paho.ClientOptions) (net.Conn, error) {
	d := net.Dialer{Timeout: opts.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = d.Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "tcps":
		cfg := opts.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: uri.Hostname()}
		}
		conn, err = (&tls.Dialer{NetDialer: &d, Config: cfg}).Dial("tcp", uri.Host)
	default:
		return nil, fmt.Errorf("MQTT broker scheme %q: want tcp, mqtt, ssl, tls or mqtts", uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	bc := newBufferedConn(conn)
	bc.linger = closeLinger
	return bc, nil
}

// connect starts connecting; paho keeps trying in the background.
func (m *mqttClient) connect() { m.client.Connect() }

// onConnect subscribes on every connection (a broker that lost the session
// gets the subscription back) and checks the broker's answer.
func (m *mqttClient) onConnect(c paho.Client) {
	m.log.Info("MQTT connected", "broker", m.cfg.Broker)
	m.mu.Lock()
	m.lastFailure = ""
	m.mu.Unlock()
	go m.subscribe(c)
}

// subscribe asks for the subscription until the broker grants it or the
// connection is lost. A refusal leaves the connection up (a resumed
// session's messages still arrive) and Ready false.
func (m *mqttClient) subscribe(c paho.Client) {
	filter := m.cfg.Topic()
	for c.IsConnectionOpen() {
		tok := c.Subscribe(filter, 1, nil)
		err := waitToken(tok, mqttConnectTimeout)
		if err == nil {
			// The one filter's code; paho keys it by the filter without
			// its $share/<group>/ prefix.
			var code byte
			results := tok.(*paho.SubscribeToken).Result()
			for _, code = range results {
			}
			switch {
			case len(results) != 1:
				err = errors.New("no answer for the filter")
			case code > 2:
				// 0x80 is MQTT 3.1.1's refusal (an ACL). The embedded
				// broker answers a resumed session's SUBSCRIBE with 0x91
				// (mochi-mqtt/server#545); asking again gets it.
				err = fmt.Errorf("refused by the broker (code %#x)", code)
			}
		}
		if err == nil {
			m.subscribed.Store(true)
			m.log.Info("MQTT subscribed", "filter", filter)
			return
		}
		m.log.Error("MQTT subscription failed; asking again", "filter", filter, "err", err, "every", resubscribeEvery)
		select {
		case <-m.stopped:
			return
		case <-time.After(resubscribeEvery):
		}
	}
}

// waitToken waits for tok up to timeout.
func waitToken(tok paho.Token, timeout time.Duration) error {
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("no answer within %v", timeout)
	}
	return tok.Error()
}

// notified counts and logs failed attempts to connect, once per distinct
// reason: retries every few seconds must not flood the log.
func (m *mqttClient) notified(_ paho.Client, n paho.ConnectionNotification) {
	f, ok := n.(paho.ConnectionNotificationFailed)
	if !ok {
		return
	}
	m.failed()
	why := fmt.Sprint(f.Reason)
	m.mu.Lock()
	repeat := why == m.lastFailure
	m.lastFailure = why
	m.mu.Unlock()
	if !repeat {
		m.log.Error("MQTT connect failed; retrying", "broker", m.cfg.Broker, "user", m.cfg.Username, "err", f.Reason)
	}
}

// connected reports whether the client holds an accepted connection.
func (m *mqttClient) connected() bool { return m.client.IsConnectionOpen() }

// subscribedNow reports whether the broker granted the subscription of
// the current connection.
func (m *mqttClient) subscribedNow() bool { return m.connected() && m.subscribed.Load() }

// disconnect sends what is queued, then DISCONNECT; the broker keeps the
// session.
func (m *mqttClient) disconnect() {
	m.stopOnce.Do(func() { close(m.stopped) })
	m.client.Disconnect(disconnectQuiesce)
}
