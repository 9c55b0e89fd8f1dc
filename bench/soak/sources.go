package soak

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsSource reads a Go process's goroutines and heap in use from its
// Prometheus /metrics.
type metricsSource struct {
	url    string
	client *http.Client
}

func newMetricsSource(url string) *metricsSource {
	return &metricsSource{url: url, client: &http.Client{}}
}

func (m *metricsSource) names() []string { return []string{"go_goroutines", "go_heap_inuse_mib"} }

func (m *metricsSource) sample(ctx context.Context) ([]float64, error) {
	out := nan(2)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return out, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return out, fmt.Errorf("reading metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("reading metrics at %s: %s", m.url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return out, fmt.Errorf("parsing metrics of %s: %w", m.url, err)
	}
	var missing []string
	for i, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes"} {
		if v, ok := gaugeSum(mfs[name]); ok {
			out[i] = v
		} else {
			missing = append(missing, name)
		}
	}
	out[1] /= 1 << 20
	if missing != nil {
		return out, fmt.Errorf("no %v at %s", missing, m.url)
	}
	return out, nil
}

func (m *metricsSource) close() {}

// gaugeSum adds up the series of a gauge or untyped family (several
// registries served as one may each have one); false when there is none.
func gaugeSum(mf *dto.MetricFamily) (float64, bool) {
	var sum float64
	var n int
	for _, m := range mf.GetMetric() {
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		default:
			continue
		}
		n++
	}
	return sum, n > 0
}

// dirSource samples the apparent size of a directory tree.
type dirSource Dir

func (d dirSource) names() []string { return []string{"disk_" + d.Name + "_mib"} }

func (d dirSource) sample(ctx context.Context) ([]float64, error) {
	n, err := dirSize(ctx, d.Path)
	if err != nil {
		return nan(1), err
	}
	return []float64{float64(n) / (1 << 20)}, nil
}

func (d dirSource) close() {}

// dirSize sums the sizes of the regular files under root: apparent bytes,
// not blocks. Files and directories that vanish during the walk (NATS and
// ClickHouse delete them all the time) are left out, not errors.
func dirSize(ctx context.Context, root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != root && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sizing %s: %w", root, err)
	}
	return total, nil
}

// partsSource reads the size and count of the telemetry database's parts
// from system.parts: active (the live data) and inactive (replaced by a
// merge, deleted after old_parts_lifetime). The columns exist in
// ClickHouse 18.16.
type partsSource struct {
	addr string
	conn driver.Conn
}

func newPartsSource(addr, user, password string) (*partsSource, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol:     clickhouse.Native,
		Addr:         []string{addr},
		Auth:         clickhouse.Auth{Username: user, Password: password},
		DialTimeout:  5 * time.Second,
		MaxOpenConns: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("soak: ClickHouse at %s as %s: %w", addr, user, err)
	}
	return &partsSource{addr: addr, conn: conn}, nil
}

func (p *partsSource) names() []string {
	return []string{"ch_active_mib", "ch_inactive_mib", "ch_active_parts", "ch_inactive_parts"}
}

const partsQuery = `SELECT sumIf(bytes_on_disk, active = 1), sumIf(bytes_on_disk, active = 0),
	countIf(active = 1), countIf(active = 0)
FROM system.parts WHERE database = 'telemetry'`

func (p *partsSource) sample(ctx context.Context) ([]float64, error) {
	var activeB, inactiveB, active, inactive uint64
	if err := p.conn.QueryRow(ctx, partsQuery).Scan(&activeB, &inactiveB, &active, &inactive); err != nil {
		return nan(4), fmt.Errorf("reading system.parts at %s: %w", p.addr, err)
	}
	return []float64{float64(activeB) / (1 << 20), float64(inactiveB) / (1 << 20), float64(active), float64(inactive)}, nil
}

func (p *partsSource) close() { p.conn.Close() }
