package dashboard

import (
	"bytes"
	"log/slog"
	"strings"
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
	if got := h.dropped.Count(dropQueueFull); got != 1 {
		t.Errorf("dropped{reason=queue_full} = %v, want 1", got)
	}
	h.broadcast([]byte("after")) // must not panic or block on the dropped client
}

// Dropping many viewers at once (a flood of viewers that never read, or a
// shutdown) writes a line per reason with a count, not one per viewer, and
// counts every one of them.
func TestDroppedViewersAreLoggedAsACount(t *testing.T) {
	const viewers = 500
	var out bytes.Buffer
	cfg := Config{ClientQueue: 1}.withDefaults()
	h := newHub(cfg, slog.New(slog.NewTextHandler(&out, nil)), prometheus.NewRegistry())
	for range viewers {
		c := &client{send: make(chan []byte, cfg.ClientQueue), done: make(chan struct{})}
		h.clients[c] = struct{}{}
	}
	h.broadcast([]byte("fills every queue"))
	h.broadcast([]byte("one too many"))
	if n := h.count(); n != 0 {
		t.Fatalf("%d of %d viewers with a full queue still registered", n, viewers)
	}
	if got := h.dropped.Count(dropQueueFull); got != viewers {
		t.Errorf("dropped{reason=queue_full} = %d, want %d", got, viewers)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `msg="websocket client dropped" reason=queue_full`) {
		t.Errorf("%d log lines for %d dropped viewers, want the first one only until the interval ends:\n%s", len(lines), viewers, out.String())
	}
}
