// Package broker runs the embedded MQTT broker (mochi-mqtt) that
// `telemetry demo` puts in front of ingest, so that the demo needs no
// Mosquitto. Devices publish to it; each region's ingest subscribes to it.
// Compose and the integration tests use real Mosquitto instead.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the TCP address, e.g. 127.0.0.1:1883; port 0 picks one.
	Listen string
	// MaxPendingWrites bounds each client's outbound queue. Policy of the
	// broker when full: drop and count. Sized so that ingest, the one heavy
	// subscriber, never reaches it at demo rates.
	MaxPendingWrites int
}

// Validate checks the configuration without touching the network.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("broker: listen address is required")
	}
	return nil
}

// Broker is a running embedded MQTT broker.
type Broker struct {
	srv  *mqtt.Server
	tcp  *listeners.TCP
	once sync.Once
	err  error
}

// Start listens and serves in the background.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxPendingWrites == 0 {
		cfg.MaxPendingWrites = 64 * 1024
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Capabilities: caps,
		Logger:       log.With("component", "broker"),
	})
	// Anonymous access, as the demo binds to loopback.
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("broker: adding auth hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: listening on %s: %w", cfg.Listen, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: serving: %w", err)
	}
	return &Broker{srv: srv, tcp: tcp}, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL is the broker's address as an MQTT client URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Close disconnects every client and stops listening.
func (b *Broker) Close() error {
	b.once.Do(func() { b.err = b.srv.Close() })
	return b.err
}
