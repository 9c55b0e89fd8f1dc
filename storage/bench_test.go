package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"golang.org/x/sync/errgroup"

	"github.com/telemetry-demo/telemetry/internal/protocol"
	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// BenchmarkInsert measures inserts into a real ClickHouse (started on a
// free port): rows a second, and rows per CPU-second of ClickHouse and this
// process together, which is rows a second per core when the insert is
// CPU-bound. Each reading has three metrics, so three rows. "lookup" first
// looks every reading up, as Config.CheckAll does (nothing is found: it
// measures the cost of the query).
//
//	go test -run '^$' -bench BenchmarkInsert -benchtime 20x ./storage/
func BenchmarkInsert(b *testing.B) {
	ch := testharness.ClickHouse(b)
	conn, err := Dial(Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if _, err := Migrate(ctx, conn, DefaultDatabase); err != nil {
		b.Fatal(err)
	}
	var boot uint64
	for _, size := range []int{1000, 5000, 20000} {
		for _, lookupFirst := range []bool{false, true} {
			name := fmt.Sprintf("readings=%d/insert", size)
			if lookupFirst {
				name = fmt.Sprintf("readings=%d/lookup+insert", size)
			}
			b.Run(name, func(b *testing.B) {
				var (
					c    columns
					rds  = make([]reading, size)
					ptrs = make([]*reading, size)
					rows int
					cpu  time.Duration
				)
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					// A fresh boot per batch: every reading is new.
					boot++
					c.reset()
					benchReadings(rds, boot)
					for j := range rds {
						ptrs[j] = &rds[j]
						c.append(&rds[j])
					}
					cpu0 := cpuTime(os.Getpid()) + cpuTime(ch.PID())
					b.StartTimer()
					if lookupFirst {
						found, err := storedAmong(ctx, conn, DefaultDatabase, ptrs)
						if err != nil || len(found) != 0 {
							b.Fatalf("lookup: %v, found %d", err, len(found))
						}
					}
					if err := c.insert(ctx, conn, DefaultDatabase); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					cpu += cpuTime(os.Getpid()) + cpuTime(ch.PID()) - cpu0
					rows += c.rows()
					b.StartTimer()
				}
				b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
				if cpu > 0 {
					b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
				}
				b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/insert")
			})
		}
	}
}

// cpuTime is the user plus system CPU time of process pid so far, from
// /proc (Linux); 0 where that is not available.
func cpuTime(pid int) time.Duration {
	if pid == os.Getpid() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// BenchmarkClusterInsert compares, in one run, batches of 20,000 readings
// (60,000 rows) stored three ways: into one server (the baseline), through
// the Distributed table of a cluster of two shards of two replicas (what
// the writer does with Config.Cluster), and split by the writer itself
// into one insert per shard, straight into each shard's first replica's
// readings_local, both at once. rows/cpu-s counts this process and every
// ClickHouse server, replication included.
//
//	go test -run '^$' -bench BenchmarkClusterInsert -benchtime 20x -count 5 ./storage/
func BenchmarkClusterInsert(b *testing.B) {
	const size = 20000
	ch := testharness.ClickHouse(b)
	c := testharness.ClickHouseCluster(b, 2, 2)
	ctx := context.Background()
	one, err := Dial(Config{ClickHouseAddr: ch.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	defer one.Close()
	if _, err := Migrate(ctx, one, DefaultDatabase); err != nil {
		b.Fatal(err)
	}
	dist, err := Dial(Config{ClickHouseAddr: strings.Join(c.Addrs(), ","), Cluster: c.Name})
	if err != nil {
		b.Fatal(err)
	}
	defer dist.Close()
	if _, err := MigrateCluster(ctx, dist, DefaultDatabase, c.Name); err != nil {
		b.Fatal(err)
	}
	var shards []driver.Conn
	for _, rs := range c.Shards {
		conn, err := Dial(Config{ClickHouseAddr: rs[0].Addr()})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		shards = append(shards, conn)
	}
	pids := func(cluster bool) []int {
		if !cluster {
			return []int{os.Getpid(), ch.PID()}
		}
		out := []int{os.Getpid()}
		for _, rs := range c.Shards {
			for _, s := range rs {
				out = append(out, s.PID())
			}
		}
		return out
	}
	var boot uint64
	for _, mode := range []string{"server", "distributed", "per-shard"} {
		b.Run(mode, func(b *testing.B) {
			var (
				all  columns
				part = make([]columns, len(shards))
				rds  = make([]reading, size)
				rows int
				cpu  time.Duration
			)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				boot++
				all.reset()
				for s := range part {
					part[s].reset()
				}
				benchReadings(rds, boot)
				for j := range rds {
					all.append(&rds[j])
					part[(j%100)%len(part)].append(&rds[j]) // by device
				}
				cpu0 := cpuOf(pids(mode != "server"))
				b.StartTimer()
				switch mode {
				case "server":
					err = all.insert(ctx, one, DefaultDatabase)
				case "distributed":
					err = all.insert(ctx, dist, DefaultDatabase)
				case "per-shard":
					var g errgroup.Group
					for s := range shards {
						g.Go(func() error { return part[s].insertInto(ctx, shards[s], DefaultDatabase+".readings_local") })
					}
					err = g.Wait()
				}
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += cpuOf(pids(mode != "server")) - cpu0
				rows += all.rows()
				b.StartTimer()
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			if cpu > 0 {
				b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
			}
		})
	}
}

// benchReadings fills rds with new readings of boot, three metrics each,
// from 100 devices taking turns (device j%100).
func benchReadings(rds []reading, boot uint64) {
	now := time.Now().UnixMilli()
	for j := range rds {
		dev := fmt.Sprintf("bench-%03d", j%100)
		rds[j] = reading{key: readingKey{device: dev, boot: boot, seq: uint64(j/100 + 1)}, region: "us-east", deviceType: "bench",
			r: protocol.Reading{Version: 1, Device: dev, Boot: boot, Seq: uint64(j/100 + 1), TS: now - int64(len(rds)-j),
				Metrics: []protocol.Metric{{Name: "temperature_c", Value: float64(j)}, {Name: "humidity_pct", Value: 40}, {Name: "battery_pct", Value: 90}}}}
	}
}

// cpuOf sums cpuTime over pids.
func cpuOf(pids []int) time.Duration {
	var d time.Duration
	for _, p := range pids {
		d += cpuTime(p)
	}
	return d
}
