package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/telemetry-demo/telemetry/bench"
	"github.com/telemetry-demo/telemetry/control"
	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/scenario"
	"github.com/telemetry-demo/telemetry/storage"
	"github.com/telemetry-demo/telemetry/stream"
)

// Target runs the scenarios on an in-process pipeline. The ledger counts
// the pipeline's own fleet (Pipeline.AttachFleet), read from
// ClickHouse as the history's read-only user; the witnesses are a bench
// run, whose ledger is bench's.
type Target struct {
	p   *Pipeline
	log *slog.Logger

	mu   sync.Mutex
	conn driver.Conn // to ClickHouse, dialled on first use
}

// NewTarget is the scenarios' target on p.
func NewTarget(p *Pipeline, log *slog.Logger) *Target { return &Target{p: p, log: log} }

func (t *Target) Check(req scenario.Request) error {
	if t.p.storageOff != "" {
		return fmt.Errorf("%w: storage is off (%s), and the ledger is read from ClickHouse", scenario.ErrUnavailable, t.p.storageOff)
	}
	addr, ch := t.p.clickhouse()
	if addr == "" {
		return fmt.Errorf("%w: ClickHouse is still starting; try again in a few seconds", scenario.ErrUnavailable)
	}
	if req.Name == scenario.StopLeader && len(t.p.nats.ServerNames(req.Region)) == 1 {
		return fmt.Errorf("%w: %s is one NATS server: stopping it stops the region (start the demo with --nats-cluster 3 to run a cluster per region)", scenario.ErrUnavailable, req.Region)
	}
	if req.Name == scenario.ClickHouseOutage && ch == nil {
		return fmt.Errorf("%w: the demo did not start ClickHouse (--clickhouse %s), so it cannot kill it; stop and start it yourself", scenario.ErrUnavailable, addr)
	}
	return nil
}

func (t *Target) CutRegion(region string) error {
	l := t.p.nats.Link(region)
	if l == nil {
		return fmt.Errorf("no region %q", region)
	}
	l.Cut()
	return nil
}

// StopStreamLeader stops the server of region that leads READINGS.
func (t *Target) StopStreamLeader(region string) (string, error) {
	name := t.p.nats.StreamLeader(region, stream.ReadingsStream)
	if name == "" {
		return "", fmt.Errorf("no server of %s leads its readings right now (an election?)", region)
	}
	return name, t.p.nats.StopServer(name)
}

func (t *Target) StartServer(name string) error { return t.p.nats.StartServer(name) }

func (t *Target) HealRegion(region string) error {
	l := t.p.nats.Link(region)
	if l == nil {
		return fmt.Errorf("no region %q", region)
	}
	l.Heal()
	return nil
}

// slot is the region's first ingest, the one the ingest scenarios crash
// and start; with Config.Ingests above 1 the others go on with their
// share meanwhile.
func (t *Target) slot(region string) (*ingestSlot, error) {
	slots := t.p.ingests[region]
	if len(slots) == 0 {
		return nil, fmt.Errorf("no ingest for region %q", region)
	}
	return slots[0], nil
}

func (t *Target) CrashIngest(ctx context.Context, region string) error {
	s, err := t.slot(region)
	if err != nil {
		return err
	}
	return s.request(ctx, s.crash, "crash")
}

func (t *Target) StartIngest(ctx context.Context, region string) error {
	s, err := t.slot(region)
	if err != nil {
		return err
	}
	return s.request(ctx, s.start, "start")
}

func (t *Target) KillClickHouse() error {
	_, ch := t.p.clickhouse()
	if ch == nil {
		return errors.New("the demo did not start ClickHouse")
	}
	ch.Kill()
	return nil
}

func (t *Target) RestartClickHouse(ctx context.Context) error {
	_, ch := t.p.clickhouse()
	if ch == nil {
		return errors.New("the demo did not start ClickHouse")
	}
	return ch.Restart(ctx)
}

func (t *Target) dial() (driver.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil {
		return t.conn, nil
	}
	addr, _ := t.p.clickhouse()
	if addr == "" {
		return nil, errors.New("storage is not up")
	}
	conn, err := storage.DialHistory(t.p.StorageConfig())
	if err != nil {
		return nil, err
	}
	t.conn = conn
	return conn, nil
}

// Close releases the ClickHouse connection.
func (t *Target) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
}

func (t *Target) Witness(ctx context.Context, w scenario.Witness) (scenario.Ledger, error) {
	addr, _ := t.p.clickhouse()
	if addr == "" {
		return scenario.Ledger{}, errors.New("storage is not up")
	}
	sc := t.p.StorageConfig()
	regions := t.p.nats.Regions()
	cfg := bench.Config{
		Fleet:      devices.Config{Broker: t.p.BrokerURL(), FleetSecret: t.p.cfg.Auth.FleetSecret, Regions: regions},
		ClickHouse: addr, ClickHouseUser: sc.HistoryUser, ClickHousePassword: sc.HistoryPassword,
		NATS: map[string]string{}, Gatherer: t.p.gatherers,
	}
	for _, r := range regions {
		cfg.NATS[r] = t.p.nats.URLAs(r, "dashboard") // reads only
	}
	return control.RunWitness(ctx, cfg, w, t.log)
}

// Fleet reports the demo's own devices, once the demo has attached them.
func (t *Target) Fleet() ([]devices.DeviceSent, bool) {
	f := t.p.fleet.Load()
	if f == nil {
		return nil, false
	}
	return f.Sent(), true
}

// ledgerChunk bounds the ranges one ledger query names: at most about 200
// bytes each, the query stays well under ClickHouse's max_query_size (256
// KiB by default), and a fleet of thousands of devices takes a few queries.
const ledgerChunk = 500

type deviceBoot struct {
	device string
	boot   uint64
}

// rangeFilter is the condition that picks ranges' readings, and its
// arguments. The sets of devices and boots and the span of seqs let
// ClickHouse read only the ranges' parts of the readings table, which is
// ordered by (device, boot, seq, metric); each row read is then matched
// against its own range by two hash lookups (transform on a
// "device:boot" key), so the cost grows with the rows read, not with rows
// times ranges as a condition per range would (2 s rather than 0.1 s for
// 400 ranges on 18.16).
func rangeFilter(ranges []ledger.Range) (string, []any) {
	var devs, boots []any
	seenDev, seenBoot := map[string]bool{}, map[uint64]bool{}
	keys := make([]string, len(ranges))
	from, to := make([]uint64, len(ranges)), make([]uint64, len(ranges))
	lo, hi := ranges[0].From, ranges[0].To
	for i, r := range ranges {
		if !seenDev[r.Device] {
			seenDev[r.Device] = true
			devs = append(devs, r.Device)
		}
		if !seenBoot[r.Boot] {
			seenBoot[r.Boot] = true
			boots = append(boots, r.Boot)
		}
		keys[i], from[i], to[i] = fmt.Sprintf("%s:%d", r.Device, r.Boot), r.From, r.To // ids have no colon
		lo, hi = min(lo, r.From), max(hi, r.To)
	}
	const key = "concat(device, ':', toString(boot))"
	where := "device IN ? AND boot IN ? AND seq BETWEEN ? AND ?" +
		" AND seq >= transform(" + key + ", ?, ?, toUInt64(1)) AND seq <= transform(" + key + ", ?, ?, toUInt64(0))"
	return where, []any{clickhouse.GroupSet{Value: devs}, clickhouse.GroupSet{Value: boots}, lo, hi, keys, from, keys, to}
}

// queryRanges runs query, a format of the table and the ranges' filter
// whose rows are device, boot and a value, chunk by chunk, and returns
// each range's value (the zero value for a range without a row).
func queryRanges[T any](ctx context.Context, t *Target, query string, ranges []ledger.Range) ([]T, error) {
	conn, err := t.dial()
	if err != nil {
		return nil, err
	}
	table := cmp.Or(t.p.StorageConfig().Database, storage.DefaultDatabase) + ".readings"
	index := make(map[deviceBoot]int, len(ranges))
	for i, r := range ranges {
		index[deviceBoot{r.Device, r.Boot}] = i
	}
	out := make([]T, len(ranges))
	for chunk := range slices.Chunk(ranges, ledgerChunk) {
		where, args := rangeFilter(chunk)
		rows, err := conn.Query(ctx, fmt.Sprintf(query, table, where), args...)
		if err != nil {
			return nil, fmt.Errorf("reading the ledger: %w", err)
		}
		for rows.Next() {
			var k deviceBoot
			var v T
			if err := rows.Scan(&k.device, &k.boot, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the ledger: %w", err)
			}
			if i, ok := index[k]; ok {
				out[i] = v
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the ledger: %w", err)
		}
	}
	return out, nil
}

// Stored counts each range's distinct readings in ClickHouse, one query
// per ledgerChunk ranges.
func (t *Target) Stored(ctx context.Context, ranges []ledger.Range) ([]uint64, error) {
	return queryRanges[uint64](ctx, t, "SELECT device, boot, uniqExact(seq) FROM %s WHERE %s GROUP BY device, boot", ranges)
}

// StoredSeqs lists each range's readings in ClickHouse. The scenario asks
// only for the ranges not wholly stored once the pipeline has drained.
func (t *Target) StoredSeqs(ctx context.Context, ranges []ledger.Range) ([][]uint64, error) {
	seqs, err := queryRanges[[]uint64](ctx, t, "SELECT device, boot, groupUniqArray(seq) FROM %s WHERE %s GROUP BY device, boot", ranges)
	for _, s := range seqs {
		slices.Sort(s)
	}
	return seqs, err
}

// Suppressed reads ingest's duplicates by device, summed over the regions.
func (t *Target) Suppressed() (map[string]uint64, bool) {
	mfs, err := t.p.gatherers.Gather()
	if err != nil {
		return nil, false
	}
	for _, mf := range mfs {
		if mf.GetName() != "telemetry_ingest_duplicates_by_device_total" {
			continue
		}
		out := map[string]uint64{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "device" {
					out[lp.GetValue()] += uint64(m.GetCounter().GetValue())
				}
			}
		}
		return out, true
	}
	return map[string]uint64{}, true
}
