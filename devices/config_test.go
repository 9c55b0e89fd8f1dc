package devices

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // empty: valid
	}{
		{"zero takes the defaults", Config{}, ""},
		{"everything set", Config{Broker: "tcp://10.0.0.1:1883", Regions: []string{"r1"}, Types: []string{TypeTracker},
			Devices: 10000, Rate: 5000, Duration: time.Minute, QoS: 2, MaxInflight: 100, Boot: 7}, ""},
		{"mqtt scheme", Config{Broker: "mqtt://localhost:1883"}, ""},
		{"bad scheme", Config{Broker: "http://localhost:1883"}, "broker"},
		{"no host", Config{Broker: "tcp://"}, "no host"},
		{"bad region", Config{Regions: []string{"US-East"}}, `region "US-East"`},
		{"duplicate region", Config{Regions: []string{"a", "b", "a"}}, `region "a" listed twice`},
		{"unknown type", Config{Types: []string{"toaster"}}, `device type "toaster"`},
		{"negative devices", Config{Devices: -1}, "devices -1"},
		{"too many devices", Config{Devices: MaxDevices + 1}, "devices"},
		{"negative rate", Config{Rate: -1}, "rate"},
		{"infinite rate", Config{Rate: math.Inf(1)}, "rate"},
		{"negative duration", Config{Duration: -time.Second}, "duration"},
		{"qos 3", Config{QoS: 3}, "qos 3"},
		{"inflight beyond packet ids", Config{MaxInflight: 70000}, "max inflight"},
		{"negative backlog", Config{MaxBacklog: -1}, "max backlog"},
		{"negative drain", Config{DrainTimeout: -1}, "drain timeout"},
		{"sub-second keep-alive", Config{KeepAlive: 10 * time.Millisecond}, "keep-alive"},
		{"negative attempts", Config{ConnectAttempts: -2}, "connect attempts"},
		{"behaviours and chaos", Config{IDPrefix: "bench-", Reboots: 0.01, Duplicates: 1, Reorder: 0.5, Chaos: 0.1,
			ClockSkew: MaxClockSkew, Duration: time.Minute, RampUp: time.Minute}, ""},
		{"id prefix upper case", Config{IDPrefix: "Bench-"}, "id prefix"},
		{"id prefix leading dash", Config{IDPrefix: "-b"}, "id prefix"},
		{"id prefix too long", Config{IDPrefix: strings.Repeat("b", maxIDPrefix+1)}, "id prefix"},
		{"chaos above 1", Config{Chaos: 1.5}, "chaos"},
		{"chaos NaN", Config{Chaos: math.NaN()}, "chaos"},
		{"negative reboots", Config{Reboots: -0.1}, "reboots"},
		{"skew outside the window", Config{ClockSkew: MaxClockSkew + time.Second}, "clock skew"},
		{"ramp-up beyond duration", Config{Duration: time.Second, RampUp: 2 * time.Second}, "ramp-up"},
		{"reorder with one in flight", Config{Reorder: 0.1, MaxInflight: 1}, "reorder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewSpreadsDevices(t *testing.T) {
	f, err := New(Config{Devices: 30, Boot: 99}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pairs := map[[2]string]int{}
	ids := map[string]bool{}
	for _, d := range f.Sent() {
		pairs[[2]string{d.Region, d.Type}]++
		if ids[d.Device] {
			t.Errorf("device id %s used twice", d.Device)
		}
		ids[d.Device] = true
		if d.Boot != 99 || d.LastSeq != 0 || d.FirstSeq != 0 {
			t.Errorf("%+v: want boot 99 and nothing sent", d)
		}
	}
	// 3 regions × 3 types, 30 devices: every pair gets 3 or 4.
	if len(pairs) != 9 {
		t.Errorf("region/type pairs %v: want all 9", pairs)
	}
	for p, n := range pairs {
		if n < 3 || n > 4 {
			t.Errorf("%v has %d devices, want 3 or 4", p, n)
		}
	}
	if got := f.Sent()[41%30].Device; got != "th-00012" {
		t.Errorf("device 11 is %s, want th-00012", got)
	}
}

func TestNewDefaultsBootToNow(t *testing.T) {
	before := uint64(time.Now().Unix())
	f, err := New(Config{Devices: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := f.Config().Boot; b < before || b > before+5 {
		t.Errorf("boot %d, want about %d", b, before)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestSplitFleetIsTheWholeFleet: ranges of a fleet (FirstDevice), as bench
// agents run them, hold the very devices of the whole fleet, skew and all.
func TestSplitFleetIsTheWholeFleet(t *testing.T) {
	whole := Config{Broker: "tcp://127.0.0.1:1", Devices: 10, Rate: 10, ClockSkew: time.Second, Boot: 7, Seed: 3}
	wf, err := New(whole, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := wf.Devices()
	var got []DeviceInfo
	for _, r := range [][2]int{{0, 4}, {4, 3}, {7, 3}} {
		part := whole
		part.FirstDevice, part.Devices = r[0], r[1]
		pf, err := New(part, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pf.Devices()...)
	}
	if !slices.Equal(got, want) {
		t.Errorf("the parts' devices\n%v\nwant the whole fleet's\n%v", got, want)
	}
	if want[9].ClockSkew == 0 && want[8].ClockSkew == 0 {
		t.Errorf("no clock skew drawn: the comparison proves little")
	}
	bad := whole
	bad.FirstDevice = -1
	if err := bad.Validate(); err == nil {
		t.Error("a negative first device is accepted")
	}
}
