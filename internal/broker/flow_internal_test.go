package broker

import "testing"

func TestMatches(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"telemetry/us-east/#", "telemetry/us-east/th/th-00001", true},
		{"telemetry/us-east/#", "telemetry/us-east", true},
		{"telemetry/us-east/#", "telemetry/eu-west/th/th-00001", false},
		{"telemetry/+/th/+", "telemetry/eu-west/th/th-00001", true},
		{"telemetry/+/th/+", "telemetry/eu-west/vb/vb-00001", false},
		{"telemetry/+/th/+", "telemetry/eu-west/th/th-00001/x", false},
		{"telemetry/+", "telemetry", false},
		{"#", "telemetry/us-east/th/th-1", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/broker/uptime", "$SYS/broker/uptime", true},
		{"telemetry/us-east/th/th-1", "telemetry/us-east/th/th-1", true},
		{"telemetry/us-east/th/th-1", "telemetry/us-east/th/th-12", false},
		{"telemetry/us-east/th", "telemetry/us-east/th/th-1", false},
	}
	for _, c := range cases {
		if got := matches(c.filter, c.topic); got != c.want {
			t.Errorf("matches(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestUnshared(t *testing.T) {
	for filter, want := range map[string]string{
		"$share/ingest-us-east/telemetry/us-east/#": "telemetry/us-east/#",
		"$SHARE/g/a/b": "a/b",
		"telemetry/#":  "telemetry/#",
	} {
		if got := unshared(filter); got != want {
			t.Errorf("unshared(%q) = %q, want %q", filter, got, want)
		}
	}
}
