package stream

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestStatusNamesABlockedIngest: `telemetry stream status` hears every
// region's ingest through one connection, and a blocked one is its
// region's alert, with the reason.
func TestStatusNamesABlockedIngest(t *testing.T) {
	e := startTestRegions(t)
	in := connectAs(t, e, "eu-west", IngestUser("eu-west"))
	admin := connectAs(t, e, "us-east", "telemetry")
	hb := IngestHeartbeat{Region: "eu-west", Accepted: 42, Blocked: "READINGS full in eu-west: maximum bytes exceeded", Since: time.Now()}
	var beats map[string]IngestHeartbeat
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		hb.Time = time.Now()
		b, _ := json.Marshal(hb)
		stop := make(chan struct{})
		go func() { // beat while listening, as ingest does
			for {
				_ = in.nc.Publish(HeartbeatSubject("eu-west"), b)
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		var err error
		beats, err = HearIngest(context.Background(), admin.nc, 500*time.Millisecond)
		close(stop)
		if err != nil {
			return err
		}
		if _, ok := beats["eu-west"]; !ok {
			return errors.New("eu-west's heartbeat not heard through us-east")
		}
		return nil
	})
	statuses := Status(context.Background(), connectAll(t, e), DefaultRegions)
	WithIngest(statuses, beats)
	var out strings.Builder
	if err := WriteStatus(&out, statuses); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"eu-west: READINGS", "ingest accepted 42", "ALERT: ingest blocked: READINGS full in eu-west: maximum bytes exceeded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stream status lacks %q:\n%s", want, out.String())
		}
	}
	for _, st := range statuses {
		if st.Region != "eu-west" && st.Alert != "" {
			t.Errorf("%s alerts %q", st.Region, st.Alert)
		}
	}
}
