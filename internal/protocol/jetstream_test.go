package protocol

import "testing"

// TestParseSubject: one parser of a reading's subject, strict about its
// names, for storage and the dashboard alike.
func TestParseSubject(t *testing.T) {
	cases := []struct {
		subject             string
		region, typ, device string
		ok                  bool
	}{
		{"telemetry.us-east.th.th-00042", "us-east", "th", "th-00042", true},
		{"telemetry.us-east.th", "", "", "", false},
		{"telemetry.us-east.th.th-1.extra", "", "", "", false},
		{"telemetry..th.d", "", "", "", false},
		{"telemetry.us-east..d", "", "", "", false},
		{"deadletter.us-east.bad_json", "", "", "", false},
		{"telemetry", "", "", "", false},
		{"telemetry.us-east.th.TH 1", "", "", "", false},
		{"telemetry.US-EAST.th.th-1", "", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.subject, func(t *testing.T) {
			got, err := ParseSubject(tc.subject)
			want := Topic{Region: tc.region, DeviceType: tc.typ, Device: tc.device}
			if got != want || (err == nil) != tc.ok {
				t.Errorf("got %+v, %v; want %+v, ok %v", got, err, want, tc.ok)
			}
			if err == nil && got.Subject() != tc.subject {
				t.Errorf("%+v.Subject() = %q, want %q back", got, got.Subject(), tc.subject)
			}
		})
	}
}
