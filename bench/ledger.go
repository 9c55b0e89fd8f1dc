package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/telemetry-demo/telemetry/devices"
	"github.com/telemetry-demo/telemetry/ledger"
	"github.com/telemetry-demo/telemetry/storage"
)

type deviceBoot struct {
	device string
	boot   uint64
}

// ledgerFor returns the ledger rows of the given boots of devices starting
// with prefix.
func ledgerFor(ctx context.Context, conn driver.Conn, prefix string, boots map[uint64]bool) (map[deviceBoot]storage.LedgerRow, error) {
	rows, err := storage.Ledger(ctx, conn, storage.LedgerOptions{DevicePrefix: prefix})
	if err != nil {
		return nil, fmt.Errorf("reading the ledger: %w", err)
	}
	out := map[deviceBoot]storage.LedgerRow{}
	for _, r := range rows {
		if boots[r.Boot] {
			out[deviceBoot{r.Device, r.Boot}] = r
		}
	}
	return out, nil
}

// missingRanges lists the runs of seq in 1..last that are not stored.
func missingRanges(ctx context.Context, conn driver.Conn, device string, boot, last uint64) ([]ledger.Range, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT seq FROM telemetry.readings WHERE device = ? AND boot = ? ORDER BY seq`, device, boot)
	if err != nil {
		return nil, fmt.Errorf("listing stored readings of %s: %w", device, err)
	}
	defer rows.Close()
	var stored []uint64
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return nil, err
		}
		stored = append(stored, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return ledger.Gaps(ledger.Range{Device: device, Boot: boot, From: 1, To: last}, stored), nil
}

// storedLatencies records, for each of the run's readings (its first
// receipt and first row), the device-to-ingest and device-to-stored
// latencies from ClickHouse, taking each device's clock skew out of its
// ts; it returns when the last reading was stored.
func storedLatencies(ctx context.Context, conn driver.Conn, prefix string, run uint64, skews map[string]int64, hops *Hops) (time.Time, error) {
	rows, err := conn.Query(ctx, `SELECT device, any(ts_ms), min(received_ms), min(stored_ms)
FROM telemetry.readings
WHERE device LIKE ? AND boot >= ?
GROUP BY device, boot, seq`, prefix+"%", run)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading latencies from ClickHouse: %w", err)
	}
	defer rows.Close()
	var last int64
	for rows.Next() {
		var (
			device                     string
			tsMS, receivedMS, storedMS uint64
		)
		if err := rows.Scan(&device, &tsMS, &receivedMS, &storedMS); err != nil {
			return time.Time{}, fmt.Errorf("reading latencies from ClickHouse: %w", err)
		}
		measured := int64(tsMS) - skews[device]
		if receivedMS > 0 {
			hops.Record(HopIngest, time.Duration(int64(receivedMS)-measured)*time.Millisecond)
		}
		if storedMS > 0 {
			hops.Record(HopStored, time.Duration(int64(storedMS)-measured)*time.Millisecond)
			last = max(last, int64(storedMS))
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, fmt.Errorf("reading latencies from ClickHouse: %w", err)
	}
	return time.UnixMilli(last), nil
}

// unmergedRows counts the run's rows beyond one per (reading, metric):
// copies ReplacingMergeTree has not merged yet.
func unmergedRows(ctx context.Context, conn driver.Conn, prefix string, run uint64) (uint64, error) {
	var n, distinct uint64
	if err := conn.QueryRow(ctx, `SELECT count(), uniqExact(device, boot, seq, metric) FROM telemetry.readings WHERE device LIKE ? AND boot >= ?`, prefix+"%", run).Scan(&n, &distinct); err != nil {
		return 0, fmt.Errorf("counting duplicate rows: %w", err)
	}
	return n - distinct, nil
}

// accountHostile checks every hostile message the fleet sent against what
// the DEADLETTER streams hold.
func accountHostile(rep *Report, fleet ranFleet, hostile []devices.DeviceHostile, dls []*deadLetters, run uint64) {
	cases := devices.ChaosCases()
	for _, h := range hostile {
		for n := uint64(1); n <= h.Sent; n++ {
			k := fleet.ChaosCase(h.Index, n)
			c := cases[k]
			m := devices.ChaosMarker{Run: run, Device: h.Index, N: n, Case: k}
			led := rep.Hostile.ByReason[string(c.Reason)]
			if led == nil {
				led = &ReasonLedger{Cases: map[string]int{}}
				rep.Hostile.ByReason[string(c.Reason)] = led
			}
			var got *deadLetter
			for _, dl := range dls {
				if d, ok := dl.hostile[m]; ok {
					got = &d
					break
				}
			}
			switch {
			case got == nil && n > h.Acked:
				rep.Hostile.Unconfirmed++
				continue
			case got == nil:
				rep.Hostile.Missing++
				led.Missing++
				led.Expected++
				rep.addExample(Misclassified{Marker: m.String(), Case: c.Name, Expected: string(c.Reason)})
				continue
			}
			led.Expected++
			led.Cases[c.Name]++
			rep.Hostile.DeadLettered++
			if got.reason == string(c.Reason) {
				led.AsExpected++
				rep.Hostile.AsExpected++
				continue
			}
			led.Misclassified++
			rep.Hostile.Misclassified++
			rep.addExample(Misclassified{Marker: m.String(), Case: c.Name, Expected: string(c.Reason), Got: got.reason, Detail: got.detail})
		}
	}
}

func (r *Report) addExample(m Misclassified) {
	if len(r.Hostile.Examples) < 20 {
		r.Hostile.Examples = append(r.Hostile.Examples, m)
	}
}
