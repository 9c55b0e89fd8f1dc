package storage

import (
	"testing"
	"time"
)

func TestStartTime(t *testing.T) {
	regions := []string{"us-east", "eu-west"}
	margin := time.Second
	for _, tc := range []struct {
		name string
		wm   map[string]uint64
		want int64 // unix ms; -1 for the whole stream
	}{
		{"nothing stored", map[string]uint64{}, -1},
		{"a region without watermark", map[string]uint64{"us-east": 5000}, -1},
		{"smallest less margin", map[string]uint64{"us-east": 5000, "eu-west": 3000}, 2000},
		{"another origin counts too", map[string]uint64{"us-east": 5000, "eu-west": 3000, "ap-south": 2500}, 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := startTime(tc.wm, regions, margin)
			switch {
			case tc.want < 0 && got != nil:
				t.Errorf("start %v, want the whole stream", got)
			case tc.want >= 0 && (got == nil || got.UnixMilli() != tc.want):
				t.Errorf("start %v, want %d ms", got, tc.want)
			}
		})
	}
}

func TestMayBeStored(t *testing.T) {
	w := &Writer{}
	rd := reading{region: "us-east", received: 100}
	if w.mayBeStored(&rd) {
		t.Error("before any change of region nothing needs a look-up")
	}
	w.fo.checkUpTo = map[string]uint64{"us-east": 100}
	for _, tc := range []struct {
		region   string
		received uint64
		want     bool
	}{
		{"us-east", 100, true},
		{"us-east", 101, false},
		{"us-east", 0, true},   // unknown: may be anything
		{"eu-west", 50, false}, // nothing of eu-west stored
	} {
		rd := reading{region: tc.region, received: tc.received}
		if got := w.mayBeStored(&rd); got != tc.want {
			t.Errorf("%s received %d: mayBeStored %v, want %v", tc.region, tc.received, got, tc.want)
		}
	}
}

func TestFailoverConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"fallbacks", Config{Fallbacks: []Fallback{{"eu-west", "nats://a:4223"}, {"ap-south", "nats://a:4224"}}}, true},
		{"fallback is home", Config{Fallbacks: []Fallback{{"us-east", "nats://a:4223"}}}, false},
		{"fallback twice", Config{Fallbacks: []Fallback{{"eu-west", "nats://a:4223"}, {"eu-west", "nats://a:4224"}}}, false},
		{"fallback without URL", Config{Fallbacks: []Fallback{{"eu-west", ""}}}, false},
		{"failover too soon", Config{FailoverAfter: time.Millisecond}, false},
		{"negative margin", Config{FailoverMargin: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
