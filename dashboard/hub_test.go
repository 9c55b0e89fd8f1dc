package dashboard

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("reading counter: %v", err)
	}
	return m.GetCounter().GetValue()
}

// A client whose queue is full is dropped, and broadcasting to it never
// blocks. (The end-to-end version, with a real stalled websocket, is
// TestStalledClientIsDropped.)
func TestHubDropsClientWithFullQueue(t *testing.T) {
	cfg := Config{ClientQueue: 2}.withDefaults()
	h := newHub(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	// No writer runs for these clients: nothing ever leaves their queues.
	slow := &client{send: make(chan []byte, cfg.ClientQueue), done: make(chan struct{})}
	h.clients[slow] = struct{}{}

	for i := range cfg.ClientQueue {
		h.broadcast([]byte{byte(i)})
		if h.count() != 1 {
			t.Fatalf("dropped after %d snapshots, queue holds %d", i+1, cfg.ClientQueue)
		}
	}
	h.broadcast([]byte("one too many"))
	if h.count() != 0 {
		t.Fatalf("client with a full queue still registered")
	}
	select {
	case <-slow.done:
	default:
		t.Errorf("dropped client's done not closed: its writer would never stop")
	}
	if got := counterValue(t, h.dropped.WithLabelValues(dropQueueFull)); got != 1 {
		t.Errorf("dropped{reason=queue_full} = %v, want 1", got)
	}
	h.broadcast([]byte("after")) // must not panic or block on the dropped client
}
