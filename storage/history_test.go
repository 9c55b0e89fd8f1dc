package storage_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/storage"
)

// TestHistory stores readings of two device types over three minutes and
// reads them back per minute from the rollups, through the HTTP API.
func TestHistory(t *testing.T) {
	e := newEnv(t)
	w := start(t, e.config())

	// Minute m (0, 1, 2 minutes back from a base minute) holds, per device
	// type, readings with temperature_c values 1..n, n = 10*(m+1) for th
	// and 5 for pw.
	base := time.Now().UTC().Truncate(time.Minute).Add(-3 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var total uint64
	publish := func(deviceType, device string, boot uint64, minute time.Time, n int) {
		for i := 1; i <= n; i++ {
			r := protocol.Reading{Version: 1, Device: device, Boot: boot, Seq: uint64(i), TS: minute.Add(time.Duration(i) * time.Second).UnixMilli(),
				Metrics: []protocol.Metric{{Name: "temperature_c", Value: float64(i)}, {Name: "battery_pct", Value: 50}}}
			msg := nats.NewMsg("telemetry." + region + "." + deviceType + "." + device)
			msg.Data = protocol.AppendEncode(nil, r)
			msg.Header.Set(jetstream.MsgIDHeader, r.ID())
			if _, err := e.js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	for m := range 3 {
		minute := base.Add(time.Duration(m) * time.Minute)
		publish("th", "th-1", uint64(m+1), minute, 10*(m+1))
		publish("pw", "pw-1", uint64(m+1), minute, 5)
	}
	e.waitStored(t, w, 2*total)
	e.waitRolledUp(t, "temperature_c", total)
	e.waitRolledUp(t, "battery_pct", total)

	api := "http://" + w.Addr() + "/api/history?"
	var h storage.History
	if code := getJSON(t, api+"metric=temperature_c&minutes=10", &h); code != http.StatusOK {
		t.Fatalf("history answered %d", code)
	}
	if h.Metric != "temperature_c" || h.Minutes != 10 || h.To.Sub(h.From) != 9*time.Minute || !h.To.Equal(h.To.Truncate(time.Minute)) {
		t.Errorf("history header %+v", h)
	}
	if len(h.Series) != 2 || h.Series[0].DeviceType != "pw" || h.Series[1].DeviceType != "th" {
		t.Fatalf("series %+v, want pw then th", h.Series)
	}
	for _, s := range h.Series {
		if s.Region != region || len(s.Points) != 3 {
			t.Fatalf("series %+v, want 3 minutes of %s", s, region)
		}
		for m, p := range s.Points {
			n := 5
			if s.DeviceType == "th" {
				n = 10 * (m + 1)
			}
			want := storage.Point{Minute: base.Add(time.Duration(m) * time.Minute), Count: uint64(n), Min: 1, Max: float64(n), Avg: float64(n+1) / 2}
			got := p
			got.P50, got.P90, got.P95, got.P99 = 0, 0, 0, 0
			if got != want {
				t.Errorf("%s minute %d = %+v, want %+v", s.DeviceType, m, p, want)
			}
			if !(p.Min <= p.P50 && p.P50 <= p.P90 && p.P90 <= p.P95 && p.P95 <= p.P99 && p.P99 <= p.Max) {
				t.Errorf("%s minute %d quantiles out of order: %+v", s.DeviceType, m, p)
			}
		}
	}

	// Filters, and a window that ends before the data.
	if code := getJSON(t, api+"metric=temperature_c&device_type=th&region="+region, &h); code != http.StatusOK || len(h.Series) != 1 || h.Series[0].DeviceType != "th" {
		t.Errorf("device_type=th: %d %+v", code, h.Series)
	}
	if code := getJSON(t, api+"metric=temperature_c&region=eu-west", &h); code != http.StatusOK || len(h.Series) != 0 || h.Series == nil {
		t.Errorf("region=eu-west: %d %+v, want an empty list", code, h.Series)
	}
	if code := getJSON(t, api+"metric=battery_pct&minutes=1", &h); code != http.StatusOK || len(h.Series) != 0 {
		t.Errorf("last minute only: %d %+v", code, h.Series)
	}
	if code := getJSON(t, api+"metric=battery_pct", &h); code != http.StatusOK || h.Minutes != storage.DefaultHistoryMinutes || len(h.Series) != 2 || h.Series[1].Points[0].Avg != 50 {
		t.Errorf("battery_pct, default minutes: %d %+v", code, h)
	}

	for _, q := range []string{
		"",
		"metric=Temp",
		"metric=temperature_c&minutes=abc",
		"metric=temperature_c&minutes=-1",
		"metric=temperature_c&minutes=0",
		"metric=temperature_c&minutes=" + strconv.Itoa(storage.MaxHistoryMinutes+1),
		"metric=temperature_c&region=" + url.QueryEscape("us'east"),
		"metric=temperature_c&device_type=TH",
	} {
		var body struct{ Error string }
		if code := getJSON(t, api+q, &body); code != http.StatusBadRequest || body.Error == "" {
			t.Errorf("%q: %d %+v, want 400 with an error", q, code, body)
		}
	}
}

// TestHistoryWireMinutesAndQuantiles reads one minute of known values back
// through /api/history as the JSON the dashboard gets: the minute must be
// the real one (not Go's zero time) and the quantiles those of the values,
// both while the minute's rollup rows are in separate parts and after
// ClickHouse has merged them.
func TestHistoryWireMinutesAndQuantiles(t *testing.T) {
	e := newEnv(t)
	w := start(t, e.config())
	minute := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Values 1..20, in two inserts so that the minute has two rollup rows.
	const n = 20
	for half := range 2 {
		for i := half*n/2 + 1; i <= (half+1)*n/2; i++ {
			r := protocol.Reading{Version: 1, Device: "th-1", Boot: 1, Seq: uint64(i), TS: minute.Add(time.Duration(i) * 2 * time.Second).UnixMilli(),
				Metrics: []protocol.Metric{{Name: "temperature_c", Value: float64(i)}}}
			msg := nats.NewMsg("telemetry." + region + ".th.th-1")
			msg.Data = protocol.AppendEncode(nil, r)
			msg.Header.Set(jetstream.MsgIDHeader, r.ID())
			if _, err := e.js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		e.waitStored(t, w, uint64((half+1)*n/2))
	}
	e.waitRolledUp(t, "temperature_c", n)

	check := func(when string) {
		t.Helper()
		var h struct {
			Series []struct {
				Points []map[string]any `json:"points"`
			} `json:"series"`
		}
		if code := getJSON(t, "http://"+w.Addr()+"/api/history?metric=temperature_c&minutes=5", &h); code != http.StatusOK {
			t.Fatalf("%s: history answered %d", when, code)
		}
		if len(h.Series) != 1 || len(h.Series[0].Points) != 1 {
			t.Fatalf("%s: series %+v, want one minute of one series", when, h.Series)
		}
		p := h.Series[0].Points[0]
		if got, want := p["minute"], minute.Format(time.RFC3339); got != want {
			t.Errorf("%s: minute %v, want %s", when, got, want)
		}
		// ClickHouse's quantiles interpolate between the values:
		// 1 + q*(n-1) for the values 1..n.
		for name, want := range map[string]float64{"count": n, "min": 1, "max": n, "avg": (n + 1) / 2.0,
			"p50": 10.5, "p90": 18.1, "p95": 19.05, "p99": 19.81} {
			if got, ok := p[name].(float64); !ok || math.Abs(got-want) > 1e-9 {
				t.Errorf("%s: %s = %v, want %v (point %v)", when, name, p[name], want, p)
			}
		}
	}
	check("before merging")
	if err := e.conn.Exec(ctx, "OPTIMIZE TABLE telemetry.readings_1m FINAL"); err != nil {
		t.Fatal(err)
	}
	check("after merging")
}

// waitRolledUp polls until the rollups count n readings of metric. The
// materialized view writes its rows after the table's, in the same insert,
// so a count of the table can see the rows before the rollups do.
func (e *env) waitRolledUp(t *testing.T, metric string, n uint64) {
	t.Helper()
	testharness.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if got := e.rollupCounts(t)[metric]; got != n {
			return fmt.Errorf("rollups count %d %s readings, want %d", got, metric, n)
		}
		return nil
	})
}
