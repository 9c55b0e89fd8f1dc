package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/poll"
)

// BenchmarkReplication10k publishes 10,000 readings/s for 10 s, spread over
// the three regions, and reports how far behind the regions fell (the most
// lag seen, in messages and seconds) and how long after the last publish
// every region held every reading. Run:
//
//	go test -run '^$' -bench Replication10k -benchtime 1x ./stream/
func BenchmarkReplication10k(b *testing.B) {
	const (
		rate     = 10_000
		duration = 10 * time.Second
	)
	for range b.N {
		e := startTestRegions(b)
		rs := connectAll(b, e)
		ctx := context.Background()

		var maxLagMsgs uint64
		var maxLagSecs float64
		stopSampling := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			for {
				select {
				case <-stopSampling:
					return
				case <-time.After(500 * time.Millisecond):
				}
				for _, st := range Status(ctx, rs, e.Regions()) {
					for _, s := range st.Sources {
						maxLagMsgs = max(maxLagMsgs, s.LagMessages)
						maxLagSecs = max(maxLagSecs, s.LagSeconds)
					}
				}
			}
		}()

		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		var published [3]int
		for i, r := range e.Regions() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc, err := nats.Connect(e.URL(r))
				if err != nil {
					b.Error(err)
					return
				}
				defer nc.Close()
				js, _ := jetstream.NewWithDomain(nc, r, jetstream.WithPublishAsyncMaxPending(4096))
				perRegion := rate / len(e.Regions())
				total := perRegion * int(duration/time.Second)
				for n := 0; n < total; n++ {
					// Hold the pace: publish n once n/perRegion seconds have passed.
					if due := start.Add(time.Duration(n) * time.Second / time.Duration(perRegion)); time.Until(due) > 0 {
						time.Sleep(time.Until(due))
					}
					msg := &nats.Msg{Subject: fmt.Sprintf("telemetry.%s.bench.%s-d%d", r, r, n%100), Data: []byte(`{"v":1}`), Header: nats.Header{}}
					msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-d%d:1:%d", r, n%100, n))
					// When the async window is full, wait for it to drain
					// (backpressure), then publish again.
					for {
						_, err := js.PublishMsgAsync(msg)
						if err == nil {
							break
						}
						if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
							b.Error(err)
							return
						}
						<-js.PublishAsyncComplete()
					}
				}
				<-js.PublishAsyncComplete()
				published[i] = total
			}()
		}
		wg.Wait()
		lastPublish := time.Now()
		want := uint64(published[0] + published[1] + published[2])
		if err := poll.Until(60*time.Second, 20*time.Millisecond, func() error {
			for _, st := range Status(ctx, rs, e.Regions()) {
				if st.Readings != want {
					return fmt.Errorf("%s holds %d readings, want %d", st.Region, st.Readings, want)
				}
			}
			return nil
		}); err != nil {
			var buf strings.Builder
			WriteStatus(&buf, Status(ctx, rs, e.Regions()))
			b.Fatalf("regions did not converge after the last publish: %v\n%s", err, buf.String())
		}
		converged := time.Since(lastPublish)
		b.StopTimer()
		close(stopSampling)
		sampler.Wait()
		b.ReportMetric(float64(want)/lastPublish.Sub(start).Seconds(), "published/s")
		b.ReportMetric(float64(converged.Milliseconds()), "converge-ms")
		b.ReportMetric(float64(maxLagMsgs), "max-lag-msgs")
		b.ReportMetric(maxLagSecs, "max-lag-s")
		e.Close()
	}
}

// BenchmarkReplicationBurst publishes a burst into eu-west as fast as
// JetStream acknowledges it (the pace of a load test) and waits until every
// region holds it: the CPU it took per reading (this process: the three
// regions, the hub and the publishers), the burst's pace, and how long
// after the burst the last region had it all. Run:
//
//	go test -run '^$' -bench ReplicationBurst -benchtime 1x -count 5 ./stream/
func BenchmarkReplicationBurst(b *testing.B) {
	const n = 100_000
	for range b.N {
		b.StopTimer()
		e := startTestRegions(b)
		rs := connectAll(b, e)
		cpu0 := processCPU(b)
		b.StartTimer()
		start := time.Now()
		burst(b, e, "eu-west", n, "bench")
		published := time.Since(start)
		last := time.Now()
		if err := poll.Until(60*time.Second, 5*time.Millisecond, func() error {
			for _, st := range Status(context.Background(), rs, e.Regions()) {
				if st.Readings != n {
					return fmt.Errorf("%s holds %d readings, want %d", st.Region, st.Readings, n)
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		converged := time.Since(last)
		b.StopTimer()
		cpu := processCPU(b) - cpu0
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/reading")
		b.ReportMetric(n/published.Seconds(), "published/s")
		b.ReportMetric(float64(converged.Milliseconds()), "converge-ms")
		e.Close()
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
