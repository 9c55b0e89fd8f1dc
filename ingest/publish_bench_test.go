package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetry-demo/telemetry/internal/testharness"
)

// benchServerEnv makes the test binary a JetStream server for
// BenchmarkPublishToJetStream (TestMain), so that the benchmark's process
// holds the client alone and its CPU time is the client's.
const benchServerEnv = "INGEST_BENCH_NATS_SERVER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(benchServerEnv); dir != "" {
		if err := serveJetStream(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// serveJetStream runs a JetStream server storing in dir with a READINGS
// stream like a region's, prints its URL and serves until stdin closes.
func serveJetStream(dir string) error {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats-server not ready after 10s")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "READINGS", Subjects: []string{"telemetry.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return err
	}
	nc.Close()
	fmt.Println(s.ClientURL())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	s.Shutdown()
	return nil
}

// BenchmarkPublishToJetStream is the hop from ingest to JetStream measured
// on the client's side: readings published with a message id, at most
// publishWindow of them awaiting JetStream's acknowledgement, each
// acknowledgement awaited in order, as ingest's acker does. The server runs
// in a child process, so client-cpu-ns/msg is this process's CPU time (user
// and system) per reading: the publisher's and the NATS client's work
// alone. "own" is ingest's publisher (publish.go), "own-buffered" the same
// on ingest's connection that lingers to batch writes (conn.go);
// "PublishMsgAsync" is nats.go's JetStream API with its bounded pending
// count.
//
//	go test -run '^$' -bench PublishToJetStream -count 5 ./ingest/
func BenchmarkPublishToJetStream(b *testing.B) {
	url := startJetStreamChild(b)
	const publishWindow = 1024
	payload := []byte(`{"v":1,"device":"th-00001","type":"th","boot":1,"seq":1,"ts":1700000000000,"metrics":{"temperature_c":21.5,"humidity_pct":40}}`)
	run := 0
	msgs := func(b *testing.B) func(i int) *nats.Msg {
		run++
		prefix := fmt.Sprintf("th-00001:%d%d:", time.Now().UnixNano(), run)
		return func(i int) *nats.Msg {
			return &nats.Msg{Subject: "telemetry.eu-west.th.th-00001", Data: payload,
				Header: nats.Header{jetstream.MsgIDHeader: {prefix + strconv.Itoa(i)}}}
		}
	}
	own := func(b *testing.B, nc *nats.Conn) {
		p := newPublisher()
		if err := p.start(nc); err != nil {
			b.Fatal(err)
		}
		msg := msgs(b)
		jobs := make(chan *job, publishWindow)
		measure(b, func() {
			go func() {
				for i := range b.N {
					j := &job{msg: msg(i)}
					p.publish(j)
					jobs <- j
				}
				close(jobs)
			}()
			for j := range jobs {
				<-j.done
				if j.err != nil || j.dup {
					b.Fatalf("publish: %v (duplicate %v)", j.err, j.dup)
				}
			}
		})
	}
	b.Run("own", func(b *testing.B) { own(b, connect(b, url)) })
	b.Run("own-buffered", func(b *testing.B) {
		own(b, connect(b, url, nats.SetCustomDialer(&natsDialer{net.Dialer{Timeout: 2 * time.Second}})))
	})
	b.Run("PublishMsgAsync", func(b *testing.B) {
		nc := connect(b, url)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow))
		if err != nil {
			b.Fatal(err)
		}
		msg := msgs(b)
		futures := make(chan jetstream.PubAckFuture, publishWindow)
		measure(b, func() {
			go func() {
				for i := range b.N {
					// The library refuses a publish when its pending
					// count stays full for its stall wait (200 ms);
					// ingest would publish again.
					m := msg(i)
					f, err := js.PublishMsgAsync(m)
					for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
						f, err = js.PublishMsgAsync(m)
					}
					if err != nil {
						panic(err)
					}
					futures <- f
				}
				close(futures)
			}()
			for f := range futures {
				select {
				case ack := <-f.Ok():
					if ack.Duplicate {
						b.Fatalf("duplicate %v", f.Msg().Header)
					}
				case err := <-f.Err():
					b.Fatalf("publish: %v", err)
				}
			}
		})
	})
}

// measure runs f as the timed part of b and reports this process's CPU
// time per operation.
func measure(b *testing.B, f func()) {
	var before, after syscall.Rusage
	b.ResetTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	f()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	b.StopTimer()
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "client-cpu-ns/msg")
}

func connect(b *testing.B, url string, opts ...nats.Option) *nats.Conn {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// startJetStreamChild starts this test binary as a JetStream server
// (serveJetStream) and returns its URL; it stops when b ends.
func startJetStreamChild(b *testing.B) string {
	return testharness.StartChild(b, "JetStream server", benchServerEnv+"="+b.TempDir()).Line(b)
}
