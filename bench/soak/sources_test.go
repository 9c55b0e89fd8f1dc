package soak

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDirSize(t *testing.T) {
	root := t.TempDir()
	files := map[string]int{"a": 1000, "sub/b": 2500, "sub/deeper/c": 0, "sub/deeper/d": 1 << 20}
	want := int64(0)
	for name, size := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		want += int64(size)
	}
	// A symlink is not a regular file: counting it would count "a" twice.
	if err := os.Symlink(filepath.Join(root, "a"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	got, err := dirSize(context.Background(), root)
	if err != nil || got != want {
		t.Errorf("dirSize = %d, %v; want %d", got, err, want)
	}

	vals, err := dirSource{Name: "x", Path: root}.sample(context.Background())
	if err != nil || vals[0] != float64(want)/(1<<20) {
		t.Errorf("sample = %v, %v; want %v MiB", vals, err, float64(want)/(1<<20))
	}
	vals, err = dirSource{Name: "x", Path: filepath.Join(root, "missing")}.sample(context.Background())
	if err == nil || !math.IsNaN(vals[0]) {
		t.Errorf("missing dir: %v, %v; want a missing value and a reason", vals, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dirSize(ctx, root); err == nil {
		t.Error("dirSize with a cancelled context: no error")
	}
}

func TestMetricsSource(t *testing.T) {
	// Two registries served as one: the sum of both.
	body := `# TYPE go_goroutines gauge
go_goroutines{part="a"} 40
go_goroutines{part="b"} 2
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 3.145728e+06
# TYPE telemetry_x counter
telemetry_x 7
`
	got, err := newMetricsSource(serve(t, body)).sample(context.Background())
	if err != nil || got[0] != 42 || got[1] != 3 {
		t.Errorf("sample = %v, %v; want [42 3]", got, err)
	}

	got, err = newMetricsSource(serve(t, "# TYPE go_goroutines gauge\ngo_goroutines 5\n")).sample(context.Background())
	if err == nil || got[0] != 5 || !math.IsNaN(got[1]) {
		t.Errorf("without a heap: %v, %v; want [5 NaN] and a reason", got, err)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	got, err = newMetricsSource(srv.URL).sample(context.Background())
	if err == nil || !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("nothing listening: %v, %v; want missing values and a reason", got, err)
	}
}

// serve serves body over HTTP until the test ends, and returns its URL.
func serve(t *testing.T, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDefaultDirs(t *testing.T) {
	data := t.TempDir()
	for _, d := range []string{"nats/us-east", "nats/eu-west", "nats/conf"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "nats", "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := DefaultDirs(data)
	want := []Dir{
		{"nats-eu-west", filepath.Join(data, "nats/eu-west")},
		{"nats-us-east", filepath.Join(data, "nats/us-east")},
		{"clickhouse", filepath.Join(data, "clickhouse")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("DefaultDirs = %v, want %v", got, want)
	}
}
