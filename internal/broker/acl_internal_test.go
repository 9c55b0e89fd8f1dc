package broker

import "testing"

func TestFilterCovers(t *testing.T) {
	for _, c := range []struct {
		rule, topic string
		want        bool
	}{
		{"telemetry/eu-west/+/th-1", "telemetry/eu-west/thermostat/th-1", true},
		{"telemetry/eu-west/+/th-1", "telemetry/eu-west/thermostat/th-2", false},
		{"telemetry/eu-west/#", "telemetry/eu-west/thermostat/th-1", true},
		{"telemetry/eu-west/#", "telemetry/eu-west", true}, // a/# covers a
		{"telemetry/eu-west/#", "telemetry/us-east/x/y", false},
		{"telemetry/+/x/y", "telemetry/+/x/y", true},          // + covers +
		{"telemetry/eu-west/x/y", "telemetry/+/x/y", false},   // a filter wider than the rule
		{"telemetry/eu-west/+", "telemetry/eu-west/#", false}, // deeper than the rule allows
		{"telemetry/eu-west/x", "telemetry/eu-west/x/y", false},
		{"telemetry/eu-west/x/y", "telemetry/eu-west/x", false},
		{"a/", "a/", true}, // empty levels are levels
		{"a/", "a", false},
		{"+/x", "/x", true},
		{"#", "$SYS/broker", false}, // wildcards at the start miss $ topics
		{"+/broker", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker", true},
		{"", "", true},
	} {
		if got := filterCovers(c.rule, c.topic); got != c.want {
			t.Errorf("filterCovers(%q, %q) = %v, want %v", c.rule, c.topic, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { filterCovers("telemetry/eu-west/+/th-1", "telemetry/eu-west/thermostat/th-1") }); n != 0 {
		t.Errorf("filterCovers allocates %v times a call, want 0: it runs for every message", n)
	}
}
