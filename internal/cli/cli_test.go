package cli

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
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

func TestSecretVar(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{"default", nil, "demo", ""},
		{"flag", []string{"--password", "given"}, "given", ""},
		{"file", []string{"--password-file", secret}, "s3cret", ""},
		{"missing file", []string{"--password-file", filepath.Join(dir, "nope")}, "", "reading secret"},
		{"empty file", []string{"--password-file", empty}, "", "is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var got string
			SecretVar(fs, &got, "password", "demo", "a password")
			err := Parse(fs, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("secret = %q, want %q", got, tc.want)
			}
		})
	}
}
