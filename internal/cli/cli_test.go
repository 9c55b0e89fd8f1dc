package cli

import (
	"io"
	"testing"
)

func TestEnvSetsUnsetFlags(t *testing.T) {
	t.Setenv("TELEMETRY_MAX_INFLIGHT", "7")
	t.Setenv("TELEMETRY_REGION", "eu-west")
	fs := NewFlagSet("x", "", io.Discard)
	inflight := fs.Int("max-inflight", 1, "")
	region := fs.String("region", "us-east", "")
	if err := Parse(fs, []string{"--region", "ap-south"}); err != nil {
		t.Fatal(err)
	}
	if *inflight != 7 {
		t.Errorf("max-inflight = %d, want 7 from the environment", *inflight)
	}
	if *region != "ap-south" {
		t.Errorf("region = %q, want the command line's ap-south", *region)
	}
}

func TestBadEnvValueIsNamed(t *testing.T) {
	t.Setenv("TELEMETRY_RATE", "fast")
	fs := NewFlagSet("x", "", io.Discard)
	fs.Float64("rate", 1, "")
	err := Parse(fs, nil)
	if err == nil {
		t.Fatal("want an error for TELEMETRY_RATE=fast")
	}
	if got := err.Error(); !contains(got, "TELEMETRY_RATE") {
		t.Errorf("error %q does not name the variable", got)
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" us-east, ,eu-west,")
	if len(got) != 2 || got[0] != "us-east" || got[1] != "eu-west" {
		t.Errorf("SplitList = %q", got)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
