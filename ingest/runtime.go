package ingest

import (
	"os"
	"runtime"
	"runtime/debug"
)

// TuneRuntime sets the Go runtime for a bridge in its own process
// (`telemetry ingest`), unless the GOMAXPROCS
// or GOGC environment variables say otherwise. Ingest's work per reading is
// a chain of short hand-overs between goroutines (the MQTT client's reader,
// the acker, the flushers of both sockets, the NATS client's reader):
// on one thread they are cheap queue operations, on several they are
// wake-ups across threads; and most of what it allocates lives for less
// than a millisecond, so collecting less often costs little memory
// (in-flight messages are bounded by --max-inflight). Measured with
// BenchmarkIngestShareOfBrokerCeiling on 2 cores (docs/INGEST.md), these
// take about a quarter off ingest's CPU time per reading (33 µs to 23 µs).
// At that cost one thread has room for some 40,000 readings/s; for more,
// run more instances (--instance) rather than raising GOMAXPROCS.
func TuneRuntime() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}
