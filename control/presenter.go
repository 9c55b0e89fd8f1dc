package control

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/dashboard"
	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
)

// Presenter is the presenter API of a dashboard in its own process
// (`telemetry dashboard --presenter-token`): the scenarios, run through
// the relay, with witness devices for their ledgers; and the audience's
// phones (--phones-ws-port), which the presenter shows and removes.
type Presenter struct {
	Token  string
	Window time.Duration
	// Witness addresses: the broker the witnesses publish to, with the
	// fleet secret their credentials come from, and the ClickHouse their
	// ledger is read from (as its read-only user).
	Broker, FleetSecret                            string
	ClickHouse, ClickHouseUser, ClickHousePassword string
	// Phones join beside Mosquitto; their journeys are read from the
	// regions and from the witnesses' ClickHouse.
	Phones join.Flags
}

// RegisterFlags adds the presenter flags of `telemetry dashboard`.
func (p *Presenter) RegisterFlags(fs *flag.FlagSet) {
	cli.SecretVar(fs, &p.Token, "presenter-token", "", "turns the presenter API (failure scenarios, done through `telemetry relay`) and the presenter panel on, for clients that send this bearer token; the relay needs the same token; empty: off")
	fs.DurationVar(&p.Window, "scenario-window", scenario.DefaultWindow, "how long a scenario's fault lasts unless the request says otherwise")
	fs.StringVar(&p.Broker, "witness-broker", devices.DefaultBroker, "MQTT broker the scenarios' witness devices publish to")
	cli.SecretVar(fs, &p.FleetSecret, "fleet-secret", deploy.DemoFleetSecret, "the fleet secret the witnesses' credentials come from (default: the public demo default)")
	fs.StringVar(&p.ClickHouse, "witness-clickhouse", "127.0.0.1:9000", "ClickHouse (native) the witnesses' ledger is read from")
	fs.StringVar(&p.ClickHouseUser, "witness-clickhouse-user", deploy.ClickHouseReaderUser, "its read-only user")
	cli.SecretVar(fs, &p.ClickHousePassword, "witness-clickhouse-password", deploy.DemoClickHouseReaderPassword, "that user's password (default: its public demo password)")
	p.Phones.RegisterFlags(fs)
}

// On reports whether the presenter API is on.
func (p Presenter) On() bool { return p.Token != "" }

// Start runs the scenarios on d's pipeline until ctx ends: it serves the
// presenter API on d (/api/scenario, with the token) and shows each run on
// d. urls is each region's NATS URL as the dashboard user. Without a
// token the API answers that it is off. Call it before d.Run.
func (p Presenter) Start(ctx context.Context, d *dashboard.Dashboard, regions []string, urls map[string]string, log *slog.Logger) (stop func(), err error) {
	api, stop := scenario.Handler(nil, ""), func() {}
	if p.On() {
		if api, stop, err = p.run(ctx, d, regions, urls, log); err != nil {
			return nil, err
		}
	}
	// With methods, as the page's own routes are ("GET /" would conflict
	// with a pattern for every method).
	d.Handle("GET /api/scenario", api)
	d.Handle("POST /api/scenario/", api)
	stopPhones, err := p.Phones.Start(ctx, d, join.Config{PhoneKey: devicecred.PhoneKey(p.FleetSecret), Regions: regions, PresenterToken: p.Token},
		join.TracerConfig{Regions: regions, NATS: urls, ClickHouse: func() (driver.Conn, error) {
			return storage.DialHistory(storage.Config{ClickHouseAddr: p.ClickHouse, HistoryUser: p.ClickHouseUser, HistoryPassword: p.ClickHousePassword})
		}}, log)
	if err != nil {
		stop()
		return nil, err
	}
	return func() { stopPhones(); stop() }, nil
}

// run starts the scenarios' runner on the relay and returns its API.
func (p Presenter) run(ctx context.Context, d *dashboard.Dashboard, regions []string, urls map[string]string, log *slog.Logger) (http.Handler, func(), error) {
	target, err := NewTarget(TargetConfig{Regions: regions, NATS: urls, Token: p.Token, Witness: bench.Config{
		Fleet:      devices.Config{Broker: p.Broker, FleetSecret: p.FleetSecret, Regions: regions},
		ClickHouse: p.ClickHouse, ClickHouseUser: p.ClickHouseUser, ClickHousePassword: p.ClickHousePassword,
		NATS: urls, ProcessMetrics: "none",
	}}, log)
	if err != nil {
		return nil, nil, err
	}
	cfg := scenario.Config{Regions: regions, Window: p.Window}
	OnDashboard(&cfg, d, func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) })
	runner, err := scenario.New(cfg, target, log)
	if err != nil {
		target.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := runner.Run(ctx); err != nil {
			log.Error("scenarios stopped", "err", err)
		}
	}()
	return scenario.Handler(runner, p.Token), func() {
		runner.Close()
		<-done
		target.Close()
	}, nil
}

// OnDashboard sets cfg's OnEvent and OnResult so that each run shows on d
// (a marker on its charts per event, the ledger card at its end) and in
// say's lines.
func OnDashboard(cfg *scenario.Config, d *dashboard.Dashboard, say func(format string, args ...any)) {
	cfg.OnEvent = func(e scenario.Event) {
		say("scenario %s (run %d) %s: %s", e.Scenario, e.Run, e.Kind, e.Text)
		d.MarkScenario(dashboard.ScenarioEvent{Run: e.Run, Scenario: e.Scenario, Kind: e.Kind, Text: e.Text, Time: e.Time})
	}
	cfg.OnResult = func(r scenario.Result) {
		d.ShowLedger(dashboardLedger(r))
		var b strings.Builder
		scenario.WriteResult(&b, r)
		say("%s", strings.TrimRight(b.String(), "\n"))
	}
}

func dashboardLedger(r scenario.Result) dashboard.ScenarioLedger {
	l := dashboard.ScenarioLedger{
		Run: r.Run, Scenario: r.Request.Name, Label: r.Request.String(), End: r.End,
		OK: r.OK, Error: r.Error,
	}
	if r.Ledger != nil {
		l.Counts = r.Ledger.Counts
		l.Quarantined, l.HostileSent = r.Ledger.Quarantined, r.Ledger.HostileSent
		if r.Ledger.Duplicates != nil {
			l.Duplicates = *r.Ledger.Duplicates
		}
		l.DuplicatedTop = topDevices(r.Ledger.DuplicatesByDevice, 3)
		if !r.Ledger.OK && l.Error == "" {
			l.Error = strings.Join(r.Ledger.Problems, "; ")
		}
	} else if l.Error == "" {
		l.Error = "no ledger"
	}
	return l
}

// topDevices is "device count" of the n devices with the largest counts,
// largest first, ties by name.
func topDevices(by map[string]uint64, n int) []string {
	var out []string
	for _, d := range ledger.Top(by, n) {
		out = append(out, fmt.Sprintf("%s %d", d, by[d]))
	}
	return out
}
