package dashboard

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// RecentWindow is how far back /api/recent keeps each region's rate: the
// span of the page's sparklines, so that a reload or a newly opened tab
// draws the last minutes (a scenario's drop and recovery) at once.
const RecentWindow = 2 * time.Minute

// recentEvery is the spacing of the points kept: at most one a second,
// whatever PushInterval, so a region holds at most 120.
const recentEvery = time.Second

// Recent is what /api/recent serves: per region, [unix ms, readings/s]
// points over the last RecentWindow, oldest first.
type Recent struct {
	Regions map[string][][2]float64 `json:"regions"`
}

// recentRates keeps the last RecentWindow of each region's rate, one point
// a second, as pushed.
type recentRates struct {
	mu     sync.Mutex
	last   time.Time
	points map[string][][2]float64
}

// add records snapshot s's rates, if a second has passed since the last
// point, and drops points older than RecentWindow.
func (r *recentRates) add(s *Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.Time.Sub(r.last) < recentEvery {
		return
	}
	r.last = s.Time
	if r.points == nil {
		r.points = map[string][][2]float64{}
	}
	ms := float64(s.Time.UnixMilli())
	cut := float64(s.Time.Add(-RecentWindow).UnixMilli())
	for _, reg := range s.Regions {
		p := append(r.points[reg.Region], [2]float64{ms, reg.Rate})
		i := 0
		for i < len(p) && p[i][0] < cut {
			i++
		}
		r.points[reg.Region] = append(p[:0], p[i:]...)
	}
}

func (r *recentRates) get() Recent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Recent{Regions: map[string][][2]float64{}}
	for k, v := range r.points {
		out.Regions[k] = append([][2]float64(nil), v...)
	}
	return out
}

func (d *Dashboard) serveRecent(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d.recent.get())
}
