package broker_test

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/telemetry-demo/telemetry/internal/broker"
)

// Closing the broker while clients are leaving on their own must not hang.
// mochi's own Close reads its client list under a read lock taken twice,
// and a leaving client asking for the write lock in between deadlocked it
// (a CI run hung for 25 minutes in a test's cleanup; the demo's Ctrl-C
// could hang the same way). Each round connects clients, lets them all
// drop their connections at once and closes the broker meanwhile.
func TestCloseWhileClientsLeave(t *testing.T) {
	const (
		rounds  = 30
		clients = 100
	)
	for round := range rounds {
		b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		conns := make([]*rawClient, clients)
		for i := range conns {
			conns[i] = rawConnect(t, b.Addr(), deviceLogin("probe", "leaver-"+strconv.Itoa(i)), "leaver-"+strconv.Itoa(i))
		}
		start := make(chan struct{})
		for _, c := range conns {
			go func() {
				<-start
				c.conn.Close()
			}()
		}
		closed := make(chan error, 1)
		go func() {
			<-start
			closed <- b.Close()
		}()
		close(start)
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: close: %v", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the broker's Close did not return within 30s while %d clients were leaving", round, clients)
		}
	}
}
