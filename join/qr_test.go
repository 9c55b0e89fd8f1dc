package join_test

import (
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"

	"github.com/telemetry-demo/telemetry/join"
)

// TestTheJoinViewShowsTheLinkAsAQRCode: the QR code of /join/qr.png, read
// back by a QR decoder, is the join link on --public-url, or without one
// on the address the request came to; the join view shows the link, and
// warns when that address is this machine's own, which no phone reaches.
func TestTheJoinViewShowsTheLinkAsAQRCode(t *testing.T) {
	for _, c := range []struct {
		public, host, want string
		warn               bool
	}{
		{"http://192.0.2.7:8080", "127.0.0.1:8080", "http://192.0.2.7:8080/join", false},
		{"", "192.0.2.9:8080", "http://192.0.2.9:8080/join", false},
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080/join", true},
		{"", "localhost:8080", "http://localhost:8080/join", true},
	} {
		s, err := join.New(join.Config{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, PublicURL: c.public}, nil)
		if err != nil {
			t.Fatal(err)
		}
		get := func(path string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Host = c.host
			rec := httptest.NewRecorder()
			s.Page().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d", path, rec.Code)
			}
			return rec
		}
		img, err := png.Decode(get("/join/qr.png").Body)
		if err != nil {
			t.Fatalf("the QR code is no PNG: %v", err)
		}
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := zxqr.NewQRCodeReader().Decode(bmp, nil)
		if err != nil {
			t.Fatalf("the QR code does not decode: %v", err)
		}
		if res.GetText() != c.want {
			t.Errorf("public URL %q, host %s: the QR code says %q, want %q", c.public, c.host, res.GetText(), c.want)
		}
		page := get("/join/show").Body.String()
		shows, warns := strings.Contains(page, c.want), strings.Contains(page, `id="join-warning"`)
		if !shows || warns != c.warn {
			t.Errorf("public URL %q, host %s: the join view shows the link: %v, warns: %v (want true, %v)", c.public, c.host, shows, warns, c.warn)
		}
	}
	for _, bad := range []string{"192.0.2.7:8080", "ftp://192.0.2.7", "http://", "http://192.0.2.7:8080/somewhere"} {
		if _, err := join.New(join.Config{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, PublicURL: bad}, nil); err == nil {
			t.Errorf("public URL %q accepted", bad)
		}
	}
}
