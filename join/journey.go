package join

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Journey is where a phone's latest reading has been, by the pipeline's
// own clocks: in JetStream in its region, copied into each other region,
// stored in ClickHouse. A hop without At has not happened yet.
type Journey struct {
	Device string `json:"device"`
	Boot   uint64 `json:"boot"`
	Seq    uint64 `json:"seq"`
	Hops   []Hop  `json:"hops"`
}

// Hop is one step of a Journey.
type Hop struct {
	Name string     `json:"name"`
	At   *time.Time `json:"at,omitempty"`
}

// Tracer finds the journey of the latest reading of the device on topic t
// (Config.Tracer); ErrNoReading when the pipeline holds none yet.
type Tracer interface {
	Trace(ctx context.Context, t protocol.Topic) (Journey, error)
}

// ErrNoReading: the pipeline holds no reading of the device yet.
var ErrNoReading = errors.New("no reading of this phone in the pipeline yet")

// traceTimeout bounds one journey's lookups.
const traceTimeout = 3 * time.Second

// serveJourney answers GET /api/journey for the phone whose MQTT login
// comes as HTTP basic authentication: its own latest reading's journey,
// and nothing of any other device's (401 without a phone's valid login).
func (s *Service) serveJourney(w http.ResponseWriter, r *http.Request) {
	user, password, ok := r.BasicAuth()
	if !ok || !devicecred.CheckPhone(s.cfg.PhoneKey, user, password, s.cfg.Now(), s.removedAt()) {
		w.Header().Set("WWW-Authenticate", `Basic realm="telemetry phone"`)
		http.Error(w, "a phone's own login (its MQTT user name and password) is needed", http.StatusUnauthorized)
		return
	}
	if s.cfg.Tracer == nil {
		http.Error(w, "this pipeline does not trace readings", http.StatusNotFound)
		return
	}
	t, _ := devicecred.Parse(user)
	ctx, cancel := context.WithTimeout(r.Context(), traceTimeout)
	defer cancel()
	j, err := s.cfg.Tracer.Trace(ctx, t)
	switch {
	case errors.Is(err, ErrNoReading):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "tracing the reading: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(j)
}
