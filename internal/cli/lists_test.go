package cli

import (
	"maps"
	"testing"
)

func TestParseRegionURLs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want map[string]string
		err  bool
	}{
		{in: "us-east=nats://a:4222,eu-west=nats://b:4222", want: map[string]string{"us-east": "nats://a:4222", "eu-west": "nats://b:4222"}},
		// A region of three servers, then another region.
		{in: "eu-west=nats://a:4222,nats://b:4222,nats://c:4222,us-east=nats://d:4222",
			want: map[string]string{"eu-west": "nats://a:4222,nats://b:4222,nats://c:4222", "us-east": "nats://d:4222"}},
		// A password with = in it is part of the URL.
		{in: "eu-west=nats://u:p=1@a:4222,nats://u:p=1@b:4222", want: map[string]string{"eu-west": "nats://u:p=1@a:4222,nats://u:p=1@b:4222"}},
		{in: "nats://a:4222", err: true},           // no region first
		{in: "eu-west=nats://a,b:4222", err: true}, // neither a region nor a URL
		{in: "=nats://a:4222", err: true},
		{in: "eu-west=", err: true},
	} {
		got, err := ParseRegionURLs(c.in)
		if c.err {
			if err == nil {
				t.Errorf("%q: %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || !maps.Equal(got, c.want) {
			t.Errorf("%q: %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
