package broker

import "log/slog"

// StartWithInflightLimit starts a broker whose clients may each have at
// most limit messages in flight, so that tests reach it with few messages.
func StartWithInflightLimit(cfg Config, limit int, log *slog.Logger) (*Broker, error) {
	cfg.inflight = limit
	return Start(cfg, log)
}
