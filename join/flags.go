package join

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/cli"
)

// RegisterBoundFlags adds the phones' bounds and join link flags of
// `telemetry demo` and `telemetry dashboard`.
func RegisterBoundFlags(fs *flag.FlagSet, maxPhones *int, publicURL *string, linkTTL *time.Duration) {
	fs.StringVar(publicURL, "public-url", "", "the dashboard's address as the audience's phones reach it (http://<host>:<port>), which the join link and its QR code carry; empty: the address the join view (/join/show) is opened at")
	fs.IntVar(maxPhones, "max-phones", DefaultMaxPhones, "phones joined at once, each with a credential of its own for 30 minutes")
	fs.DurationVar(linkTTL, "join-link-ttl", DefaultLinkTTL, "how long a join link lets phones in (1m to 24h); the join view shows a fresh one, and the presenter's \"remove all phones\" withdraws every link made before")
}

// Flags are the phones' flags of `telemetry dashboard` beside Mosquitto
// (compose): the phones join on the dashboard's address and publish over
// Mosquitto's WebSocket listener, each a client of its dynamic security
// plugin (Dynsec).
type Flags struct {
	// WSPort is the port of Mosquitto's WebSocket listener as phones
	// reach it, on the host they reached the dashboard by; 0: no phones.
	WSPort    int
	Dynsec    DynsecConfig
	MaxPhones int
	PublicURL string
	LinkTTL   time.Duration
}

// RegisterFlags adds the flags.
func (f *Flags) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&f.WSPort, "phones-ws-port", 0, "the port of Mosquitto's MQTT over WebSocket listener as the audience's phones reach it, on the host they reach the dashboard by (compose: 8083); with it, phones join at /join (docs/PRESENTER.md); 0: no phones")
	fs.StringVar(&f.Dynsec.URL, "phones-dynsec-url", "tcp://127.0.0.1:1884", "Mosquitto, where its dynamic security plugin takes each phone's login")
	fs.StringVar(&f.Dynsec.User, "phones-dynsec-user", deploy.MQTTJoinUser, "the plugin's client that may send it commands (telemetry mqtt passwd --dynsec-out writes it)")
	cli.SecretVar(fs, &f.Dynsec.Password, "phones-dynsec-password", deploy.DemoMQTTJoinPassword, "its password (default: the public demo default)")
	RegisterBoundFlags(fs, &f.MaxPhones, &f.PublicURL, &f.LinkTTL)
}

// On reports whether phones may join.
func (f Flags) On() bool { return f.WSPort != 0 }

// Site is the dashboard the phones' pages and API are served on.
type Site interface {
	Handle(pattern string, h http.Handler)
	Registry() *prometheus.Registry
}

// Start, when phones may join, connects to Mosquitto's plugin, removes its
// ended phones until ctx ends, and serves the phones on site: cfg gives
// the phone key, the regions and the presenter token, tc where journeys
// are read. stop closes what it opened.
func (f Flags) Start(ctx context.Context, site Site, cfg Config, tc TracerConfig, log *slog.Logger) (stop func(), err error) {
	if !f.On() {
		return func() {}, nil
	}
	d, err := NewDynsec(f.Dynsec, log)
	if err != nil {
		return nil, err
	}
	tracer := NewTracer(tc)
	cfg.BrokerWSPort, cfg.Broker, cfg.Tracer = f.WSPort, d, tracer
	cfg.MaxPhones, cfg.PublicURL, cfg.LinkTTL = f.MaxPhones, f.PublicURL, f.LinkTTL
	s, err := New(cfg, log)
	if err == nil {
		for _, c := range s.Collectors() {
			if err = site.Registry().Register(c); err != nil {
				break
			}
		}
	}
	if err != nil {
		d.Close()
		tracer.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(runCtx)
	}()
	// With methods, as the page's own routes are ("GET /" would conflict
	// with a pattern for every method).
	for _, pattern := range []string{"POST /api/join", "POST /api/join/remove", "GET /api/journey"} {
		site.Handle(pattern, s)
	}
	page := s.Page()
	site.Handle("GET /join", page)
	site.Handle("GET /join/", page)
	return func() {
		cancel()
		<-done
		d.Close()
		tracer.Close()
	}, nil
}
