package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// History limits.
const (
	DefaultHistoryMinutes = 30
	MaxHistoryMinutes     = 24 * 60
)

// ErrBadHistoryQuery is wrapped by the errors of a HistoryQuery that can
// never be answered (the HTTP API answers 400 to them).
var ErrBadHistoryQuery = errors.New("bad history query")

// HistoryQuery selects a per-minute series.
type HistoryQuery struct {
	// Metric is the metric's name, e.g. temperature_c. Required.
	Metric string
	// Minutes is how far back: the current minute and the Minutes-1 before
	// it. Zero means DefaultHistoryMinutes; at most MaxHistoryMinutes.
	Minutes int
	// Region and DeviceType, when set, keep only that region or device type.
	Region     string
	DeviceType string
}

// History is a per-minute series of one metric per region and device
// type, served as JSON at /api/history.
type History struct {
	Metric  string `json:"metric"`
	Minutes int    `json:"minutes"`
	// From is the start of the first minute asked for, To the start of the
	// last (the current one, still filling); RFC 3339, UTC.
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Series []Series  `json:"series"` // ordered by region, then device type
}

// Series is the minutes of one region and device type, oldest first.
// Minutes without readings are absent.
type Series struct {
	Region     string  `json:"region"`
	DeviceType string  `json:"device_type"`
	Points     []Point `json:"points"`
}

// Point summarises one minute: readings of the metric measured in it (by
// their ts), counted once each. The quantiles are ClickHouse's
// approximate quantiles (reservoir sampling), exact for small counts.
type Point struct {
	Minute time.Time `json:"minute"` // start of the minute, RFC 3339, UTC
	Count  uint64    `json:"count"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Avg    float64   `json:"avg"`
	P50    float64   `json:"p50"`
	P90    float64   `json:"p90"`
	P95    float64   `json:"p95"`
	P99    float64   `json:"p99"`
}

func (q HistoryQuery) validate() (HistoryQuery, error) {
	if q.Minutes == 0 {
		q.Minutes = DefaultHistoryMinutes
	}
	switch {
	case !protocol.ValidMetricName(q.Metric):
		return q, fmt.Errorf("%w: metric %q: want a metric name such as temperature_c", ErrBadHistoryQuery, q.Metric)
	case q.Minutes < 1 || q.Minutes > MaxHistoryMinutes:
		return q, fmt.Errorf("%w: minutes %d: want 1 to %d", ErrBadHistoryQuery, q.Minutes, MaxHistoryMinutes)
	case q.Region != "" && !protocol.ValidName(q.Region):
		return q, fmt.Errorf("%w: region %q is not a valid name", ErrBadHistoryQuery, q.Region)
	case q.DeviceType != "" && !protocol.ValidName(q.DeviceType):
		return q, fmt.Errorf("%w: device type %q is not a valid name", ErrBadHistoryQuery, q.DeviceType)
	}
	return q, nil
}

// QueryHistory reads the per-minute rollups (table readings_1m of
// database) for the last q.Minutes minutes up to now.
func QueryHistory(ctx context.Context, conn driver.Conn, database string, q HistoryQuery, now time.Time) (History, error) {
	q, err := q.validate()
	if err != nil {
		return History{}, err
	}
	if !identifier.MatchString(database) {
		return History{}, fmt.Errorf("history: database %q: want letters, digits and underscores", database)
	}
	to := now.UTC().Truncate(time.Minute)
	from := to.Add(-time.Duration(q.Minutes-1) * time.Minute)
	h := History{Metric: q.Metric, Minutes: q.Minutes, From: from, To: to, Series: []Series{}}

	// The rows of one key may not be merged yet: -Merge with GROUP BY
	// combines them.
	sql := "SELECT minute, region, device_type, countMerge(n), minMerge(lo), maxMerge(hi), avgMerge(mean), " +
		"quantilesMerge(0.5, 0.9, 0.95, 0.99)(q) FROM " + database + ".readings_1m " +
		"WHERE metric = ? AND minute >= toDateTime(?) AND minute <= toDateTime(?)"
	args := []any{q.Metric, from.Unix(), to.Unix()}
	if q.Region != "" {
		sql += " AND region = ?"
		args = append(args, q.Region)
	}
	if q.DeviceType != "" {
		sql += " AND device_type = ?"
		args = append(args, q.DeviceType)
	}
	sql += " GROUP BY minute, region, device_type ORDER BY region, device_type, minute"
	// The history user is readonly=1, which (on current releases) refuses a
	// query that changes any setting, and clickhouse-go sends
	// max_execution_time for a context with a deadline. So the query keeps
	// ctx's cancellation but not its deadline; the user's profile bounds
	// its execution time instead.
	qctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	rows, err := conn.Query(qctx, sql, args...)
	if err != nil {
		return History{}, fmt.Errorf("history of %s: %w", q.Metric, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			minute             time.Time
			region, deviceType string
			p                  Point
			qs                 []float64
		)
		if err := rows.Scan(&minute, &region, &deviceType, &p.Count, &p.Min, &p.Max, &p.Avg, &qs); err != nil {
			return History{}, fmt.Errorf("history of %s: %w", q.Metric, err)
		}
		p.Minute = minute.UTC()
		if len(qs) == 4 {
			p.P50, p.P90, p.P95, p.P99 = qs[0], qs[1], qs[2], qs[3]
		}
		if n := len(h.Series); n == 0 || h.Series[n-1].Region != region || h.Series[n-1].DeviceType != deviceType {
			h.Series = append(h.Series, Series{Region: region, DeviceType: deviceType})
		}
		s := &h.Series[len(h.Series)-1]
		s.Points = append(s.Points, p)
	}
	if err := rows.Err(); err != nil {
		return History{}, fmt.Errorf("history of %s: %w", q.Metric, err)
	}
	return h, nil
}

// History is QueryHistory on the read-only history user's connection
// (Config.HistoryUser) and the writer's database, now, run by the read
// pool (readpool.go): at most readSlots ledger and history queries at
// once, and identical queries asked within readCacheAge answered by one
// (whose From and To are then up to that much older). When no slot frees
// in time it returns an error wrapping ErrBusy.
func (w *Writer) History(ctx context.Context, q HistoryQuery) (History, error) {
	a, err := w.history(ctx, q)
	if err != nil {
		return History{}, err
	}
	h := a.val.(History)
	// a's series are shared: copy down to the points.
	h.Series = slices.Clone(h.Series)
	for i := range h.Series {
		h.Series[i].Points = slices.Clone(h.Series[i].Points)
	}
	return h, nil
}

// history is Writer.History as the read pool shares it: the History and
// its JSON.
func (w *Writer) history(ctx context.Context, q HistoryQuery) (*answer, error) {
	q, err := q.validate() // a bad query is not worth a slot
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s|%d|%s|%s", q.Metric, q.Minutes, q.Region, q.DeviceType)
	return w.reads.do(ctx, "history", key, func(ctx context.Context) (*answer, error) {
		h, err := QueryHistory(ctx, w.hconn, w.cfg.Database, q, time.Now())
		if err != nil {
			return nil, err
		}
		return newAnswer(h, h), nil
	})
}
