package redact

import "testing"

func TestURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://storage:s3cret@127.0.0.1:4222", "nats://storage:xxxxx@127.0.0.1:4222"},
		{"nats://token-only@127.0.0.1:4222", "nats://token-only@127.0.0.1:4222"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"%zz", "%zz"},
		// A region's cluster: every server's password.
		{"nats://storage:s3cret@10.0.0.1:4222,nats://storage:s3cret@10.0.0.2:4222", "nats://storage:xxxxx@10.0.0.1:4222,nats://storage:xxxxx@10.0.0.2:4222"},
	}
	for _, tc := range tests {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
