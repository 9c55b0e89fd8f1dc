package broker

import (
	"log/slog"
	"time"
)

// StartWithInflightLimit starts a broker whose clients may each have at
// most limit messages in flight, so that tests reach it with few messages.
func StartWithInflightLimit(cfg Config, limit int, log *slog.Logger) (*Broker, error) {
	cfg.inflight = limit
	return Start(cfg, log)
}

// SetLogInterval changes how often the broker logs one kind of refusal at
// most, so that tests see several intervals.
func (b *Broker) SetLogInterval(d time.Duration) {
	b.tcp.refused.SetLogInterval(d)
	b.tcp.ended.SetLogInterval(d)
}
