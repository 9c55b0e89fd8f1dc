package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
	"github.com/telemetry-demo/telemetry/internal/httpserv"
	"github.com/telemetry-demo/telemetry/stream"
)

// LinkSpec is one link of the relay: connections to Listen go on to
// Target.
type LinkSpec struct {
	Name, Listen, Target string
}

// ParseLinks reads "name=listen>target,..." (the relay's --links).
func ParseLinks(s string) ([]LinkSpec, error) {
	var out []LinkSpec
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		name, rest, ok1 := strings.Cut(strings.TrimSpace(item), "=")
		listen, target, ok2 := strings.Cut(rest, ">")
		if !ok1 || !ok2 || name == "" || listen == "" || target == "" {
			return nil, fmt.Errorf("link %q: want name=listen>target", item)
		}
		if seen[name] {
			return nil, fmt.Errorf("link %q named twice", name)
		}
		seen[name] = true
		out = append(out, LinkSpec{Name: name, Listen: listen, Target: target})
	}
	return out, nil
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	Links []LinkSpec
	// NATSURL is where requests arrive: any server of the pipeline's
	// account; compose uses the hub, which no cut reaches.
	NATSURL string
	// Token is the presenter token requests are signed with; empty: the
	// relay relays, and refuses every request.
	Token string
}

// Validate checks the configuration without touching the network.
func (c RelayConfig) Validate() error {
	if len(c.Links) == 0 {
		return errors.New("relay: no links")
	}
	if c.NATSURL == "" {
		return errors.New("relay: a NATS URL is required")
	}
	return nil
}

// LinkLimits bound each link's connections: a region's leaf connection, an
// ingest's MQTT connection and storage's ClickHouse pool need a few. Past
// them a connection is closed as it arrives, and counted.
var LinkLimits = connlimit.Limits{Total: 256, PerAddr: 256}

// Relay holds the links a scenario may cut and takes signed requests to
// cut and heal them (see the package comment).
type Relay struct {
	cfg     RelayConfig
	log     *slog.Logger
	links   map[string]*stream.Link
	v       *verifier
	refused *connlimit.Tally // requests
	conns   *connlimit.Tally // connections past LinkLimits
	cut     *prometheus.GaugeVec

	mu     sync.Mutex
	timers map[string]*time.Timer // a cut link's self-heal
	nc     *nats.Conn
}

// Reasons of telemetry_relay_refused_total, one per refusal error.
var refusals = map[error]string{
	errNoToken: "no_token", errSignature: "bad_signature", errStale: "stale",
	errReplay: "replayed", errMalformed: "malformed", errUnknownLink: "unknown_link",
}

var errUnknownLink = errors.New("no such link")

// NewRelay listens on every link's address.
func NewRelay(cfg RelayConfig, log *slog.Logger) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("component", "relay")
	reasons := make([]string, 0, len(refusals))
	for _, r := range refusals {
		reasons = append(reasons, r)
	}
	r := &Relay{cfg: cfg, log: log, links: map[string]*stream.Link{}, v: newVerifier(cfg.Token), timers: map[string]*time.Timer{},
		refused: connlimit.NewTally("telemetry_relay_refused_total",
			"Requests to cut or heal a link the relay refused, by reason.", "relay refused a request", log, reasons...),
		conns: connlimit.NewTally("telemetry_relay_connections_refused_total",
			"Connections to the relay's links refused past LinkLimits, by reason.", "relay refused a connection", log,
			connlimit.ReasonTooMany, connlimit.ReasonTooManyFromAddress),
		cut: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telemetry_relay_link_cut",
			Help: "1 while a link is cut by a scenario."}, []string{"link"})}
	for _, l := range cfg.Links {
		ln, err := net.Listen("tcp", l.Listen)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("relay: link %s: listening on %s: %w", l.Name, l.Listen, err)
		}
		r.links[l.Name] = stream.ServeLink(l.Name, connlimit.Listen(ln, LinkLimits, r.conns), l.Target, log)
		r.cut.WithLabelValues(l.Name).Set(0)
	}
	return r, nil
}

// Collectors are the relay's metrics.
func (r *Relay) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.refused, r.conns, r.cut}
}

// Ready says whether requests can arrive.
func (r *Relay) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc == nil || !r.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	return nil
}

// Run takes requests until ctx is cancelled. The links relay from
// NewRelay on, whether or not NATS answers.
func (r *Relay) Run(ctx context.Context) error {
	nc, err := nats.Connect(r.cfg.NATSURL, nats.Name("telemetry-relay"),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		return fmt.Errorf("relay: connecting to NATS: %w", err)
	}
	r.mu.Lock()
	r.nc = nc
	r.mu.Unlock()
	defer nc.Close()
	if _, err := nc.Subscribe(RelaySubject, r.handle); err != nil {
		return fmt.Errorf("relay: subscribing to %s: %w", RelaySubject, err)
	}
	<-ctx.Done()
	return nil
}

func (r *Relay) handle(m *nats.Msg) {
	req, err := r.v.check(m, time.Now())
	if err == nil {
		err = r.apply(req)
	}
	reply := Reply{OK: err == nil}
	if err != nil {
		reply.Error = err.Error()
		r.refused.Add(refusals[err], "a NATS client")
	}
	if m.Reply != "" {
		_ = m.Respond(marshal(reply))
	}
}

// apply cuts or heals a link; a cut heals itself after its window.
func (r *Relay) apply(req Request) error {
	link, ok := r.links[req.Link]
	if !ok {
		return errUnknownLink
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.timers[req.Link]; t != nil {
		t.Stop()
		delete(r.timers, req.Link)
	}
	switch req.Action {
	case ActionCut:
		window := time.Duration(req.WindowMS) * time.Millisecond
		if window <= 0 || window > MaxWindow {
			window = MaxWindow
		}
		link.Cut()
		r.cut.WithLabelValues(req.Link).Set(1)
		r.timers[req.Link] = time.AfterFunc(window, func() {
			r.log.Warn("link healed by its window, no request came", "link", req.Link)
			r.heal(req.Link)
		})
	case ActionHeal:
		link.Heal()
		r.cut.WithLabelValues(req.Link).Set(0)
	default:
		return errMalformed
	}
	return nil
}

func (r *Relay) heal(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.timers, name)
	r.links[name].Heal()
	r.cut.WithLabelValues(name).Set(0)
}

// Close stops every link and pending self-heal.
func (r *Relay) Close() error {
	r.mu.Lock()
	for _, t := range r.timers {
		t.Stop()
	}
	r.timers = map[string]*time.Timer{}
	r.mu.Unlock()
	var errs []error
	for _, l := range r.links {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Serve runs a relay of cfg until ctx is cancelled, with its /metrics and
// /healthz on listen: `telemetry relay`.
func Serve(ctx context.Context, cfg RelayConfig, listen string, log *slog.Logger) error {
	ln, err := httpserv.Listen(listen, httpserv.ServiceLimits, log)
	if err != nil {
		return err
	}
	r, err := NewRelay(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer r.Close()
	if cfg.Token == "" {
		log.Warn("no presenter token: the relay relays, and refuses every request to cut a link")
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.Run(ctx) })
	mux := httpserv.Mux(httpserv.Registry(append(r.Collectors(), ln.Refused)...), r.Ready)
	g.Go(func() error { return httpserv.Serve(ctx, ln, mux, log) })
	return g.Wait()
}
