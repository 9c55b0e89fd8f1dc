package join

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// Defaults of Config's bounds.
const (
	DefaultMaxPhones     = 300
	DefaultMaxPerAddress = 50
	DefaultTTL           = 30 * time.Minute
	DefaultLinkTTL       = 2 * time.Hour
)

// Config configures the join service.
type Config struct {
	// PhoneKey makes the phones' passwords: devicecred.PhoneKey of the
	// broker's fleet secret. Required.
	PhoneKey string
	// Regions the phones are spread over, in turn. Required.
	Regions []string
	// BrokerWSPort is the port of the broker's MQTT over WebSocket
	// listener; a phone is sent to ws://<the host it reached the
	// dashboard by>:<port>/mqtt. Required.
	BrokerWSPort int
	// PublicURL is the dashboard's address as phones reach it
	// (http://<host>:<port>), which the join link and its QR code carry;
	// empty: the address the request for the QR code came to.
	PublicURL string
	// MaxPhones, MaxPerAddress and TTL bound the phones (defaults above;
	// TTL at most devicecred.MaxPhoneTTL).
	MaxPhones, MaxPerAddress int
	TTL                      time.Duration
	// LinkTTL is how long a join link lets phones in (default above, 1m
	// to devicecred.MaxPhoneTTL); the join view shows a fresh one.
	LinkTTL time.Duration
	// Broker, if set, is where phones' credentials take effect: the
	// embedded broker (Embedded) checks them itself and refuses them once
	// the phones are removed; Mosquitto is told each one (Dynsec).
	Broker Broker
	// PresenterToken, if set, turns on POST /api/join/remove (the
	// presenter's "remove all phones", with Authorization: Bearer
	// <token>); it needs Broker.
	PresenterToken string
	// Tracer, if set, lets a phone see its latest reading's journey at
	// GET /api/journey.
	Tracer Tracer
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Credential is what a phone gets: who it is and how it logs in.
type Credential struct {
	Device   string    `json:"device"`
	Region   string    `json:"region"`
	Type     string    `json:"type"`
	Topic    string    `json:"topic"`
	ClientID string    `json:"client_id"`
	User     string    `json:"user"`
	Password string    `json:"password"`
	Broker   string    `json:"broker"`
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
}

// Service hands out phones' credentials, within its bounds.
type Service struct {
	cfg Config
	log *slog.Logger

	refused *connlimit.Tally // by reason, logged rate limited
	joined  prometheus.Counter

	mu      sync.Mutex
	next    int       // the region of the next phone
	phones  []issued  // phones whose credential has not ended, oldest first
	removed time.Time // when the presenter last removed the phones
}

// Reasons of telemetry_join_refused_total.
const (
	refusedFull    = "full"                  // MaxPhones
	refusedAddress = "too_many_from_address" // MaxPerAddress
)

type issued struct {
	device, addr string
	end          time.Time
}

// New checks cfg and returns the service.
func New(cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.PhoneKey == "" || len(cfg.Regions) == 0 || cfg.BrokerWSPort <= 0 || cfg.BrokerWSPort > 65535 {
		return nil, errors.New("join: a phone key, regions and the broker's WebSocket port are required")
	}
	for _, r := range cfg.Regions {
		if !protocol.ValidName(r) {
			return nil, fmt.Errorf("join: region %q: want lower-case letters, digits and dashes", r)
		}
	}
	if cfg.MaxPhones == 0 {
		cfg.MaxPhones = DefaultMaxPhones
	}
	if cfg.MaxPerAddress == 0 {
		cfg.MaxPerAddress = DefaultMaxPerAddress
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.LinkTTL == 0 {
		cfg.LinkTTL = DefaultLinkTTL
	}
	if cfg.MaxPhones < 0 || cfg.MaxPerAddress < 0 || cfg.TTL < time.Minute || cfg.TTL > devicecred.MaxPhoneTTL ||
		cfg.LinkTTL < time.Minute || cfg.LinkTTL > devicecred.MaxPhoneTTL {
		return nil, fmt.Errorf("join: bounds %d phones, %d per address, %v each, links for %v: want positive counts and 1m to %v",
			cfg.MaxPhones, cfg.MaxPerAddress, cfg.TTL, cfg.LinkTTL, devicecred.MaxPhoneTTL)
	}
	if cfg.PresenterToken != "" && cfg.Broker == nil {
		return nil, errors.New("join: removing the phones (a presenter token) needs the broker that lets them in")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("join: public URL %q: want http://<host>[:<port>] as phones reach the dashboard", cfg.PublicURL)
		}
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "join")
	return &Service{cfg: cfg, log: log,
		refused: connlimit.NewTally("telemetry_join_refused_total",
			"Phones refused at POST /api/join, by reason: full (the most phones at once), too_many_from_address (the most from one address).",
			"phones refused", log, refusedFull, refusedAddress),
		joined: prometheus.NewCounter(prometheus.CounterOpts{Name: "telemetry_join_phones_total", Help: "Phones given a credential at POST /api/join."}),
	}, nil
}

// Collectors are the service's metrics, for a /metrics.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.refused, s.joined,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "telemetry_join_phones", Help: "Phones holding a credential that has not ended."},
			func() float64 { return float64(s.Phones()) })}
}

// Refused is how many phones were refused for reason (full,
// too_many_from_address).
func (s *Service) Refused(reason string) uint64 { return s.refused.Count(reason) }

// ServeHTTP answers POST /api/join?t=<the join link's ticket> with a
// Credential (201); 410 when the link has expired or the phones were
// removed since, 429 when the client's address has MaxPerAddress phones,
// 503 when MaxPhones have joined; each refusal says what to do. It also
// serves GET /api/journey (serveJourney) and POST /api/join/remove
// (serveRemove).
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/api/journey" && r.Method == http.MethodGet:
		s.serveJourney(w, r)
		return
	case r.URL.Path == "/api/join/remove" && r.Method == http.MethodPost:
		s.serveRemove(w, r)
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST to join", http.StatusMethodNotAllowed)
		return
	case !s.linkValid(r.URL.Query().Get("t")):
		http.Error(w, expiredText, http.StatusGone)
		return
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	addr := connlimit.HostOf(r.RemoteAddr)
	cred, retry, status := s.issue(addr, host)
	if status == http.StatusCreated && s.cfg.Broker != nil {
		if err := s.cfg.Broker.Admit(r.Context(), cred); err != nil {
			s.forget(cred.Device)
			s.log.Warn("the broker did not take a phone", "device", cred.Device, "err", err)
			http.Error(w, "the broker did not take your phone; try again in a moment", http.StatusServiceUnavailable)
			return
		}
	}
	if status != http.StatusCreated {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds())+1))
		msg := "the room is full: " + strconv.Itoa(s.cfg.MaxPhones) + " phones have joined; try again in a few minutes"
		if status == http.StatusTooManyRequests {
			msg = "too many phones from your network: " + strconv.Itoa(s.cfg.MaxPerAddress) + " have joined from it; try again in a few minutes"
		}
		http.Error(w, msg, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(cred)
}

// issue makes a phone for a client at addr that reached the dashboard as
// host, or says why not and when one ends.
func (s *Service) issue(addr, host string) (Credential, time.Duration, int) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.phones[:0]
	for _, p := range s.phones {
		if p.end.After(now) {
			kept = append(kept, p)
		}
	}
	s.phones = kept
	if len(s.phones) >= s.cfg.MaxPhones {
		s.refused.Add(refusedFull, addr)
		return Credential{}, s.phones[0].end.Sub(now), http.StatusServiceUnavailable
	}
	from := 0
	var first time.Time
	for _, p := range s.phones {
		if p.addr == addr {
			if from == 0 {
				first = p.end
			}
			from++
		}
	}
	if from >= s.cfg.MaxPerAddress {
		s.refused.Add(refusedAddress, addr)
		return Credential{}, first.Sub(now), http.StatusTooManyRequests
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := "ph-" + hex.EncodeToString(b[:])
	region := s.cfg.Regions[s.next%len(s.cfg.Regions)]
	s.next++
	end := now.Add(s.cfg.TTL).Truncate(time.Second)
	user := devicecred.Username(region, devicecred.PhoneType, id)
	if !now.After(s.removed) {
		now = s.removed.Add(time.Millisecond) // issued after the removal
	}
	s.phones = append(s.phones, issued{device: id, addr: addr, end: end})
	s.joined.Inc()
	s.log.Info("phone joined", "device", id, "region", region, "from", addr, "until", end)
	return Credential{
		Device: id, Region: region, Type: devicecred.PhoneType, ClientID: id,
		Topic: protocol.Topic{Region: region, DeviceType: devicecred.PhoneType, Device: id}.String(),
		User:  user, Password: devicecred.PhonePassword(s.cfg.PhoneKey, user, now, end),
		Broker: "ws://" + net.JoinHostPort(host, strconv.Itoa(s.cfg.BrokerWSPort)) + broker.WSPath,
		Issued: now, Expires: end,
	}, 0, http.StatusCreated
}

// forget drops a phone the broker did not take.
func (s *Service) forget(device string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.phones {
		if p.device == device {
			s.phones = append(s.phones[:i], s.phones[i+1:]...)
			return
		}
	}
}

// Max is the most phones at once.
func (s *Service) Max() int { return s.cfg.MaxPhones }

// Phones is how many phones hold a credential that has not ended.
func (s *Service) Phones() int {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.phones {
		if p.end.After(now) {
			n++
		}
	}
	return n
}
