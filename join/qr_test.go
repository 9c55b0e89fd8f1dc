package join_test

import (
	"bytes"
	"encoding/base64"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"

	"github.com/telemetry-demo/telemetry/join"
)

// TestTheJoinViewShowsTheLinkAsAQRCode: the join view (/join/show) shows
// a join link on --public-url, or without one on the address the request
// came to, and its QR code, which a QR decoder reads back as that very
// link; the link opens the phone's page. The view warns when that address
// is this machine's own, which no phone reaches.
func TestTheJoinViewShowsTheLinkAsAQRCode(t *testing.T) {
	qrSrc := regexp.MustCompile(`id="join-qr" src="data:image/png;base64,([^"]+)"`)
	shown := regexp.MustCompile(`id="join-link">([^<]+)<`)
	for _, c := range []struct {
		public, host, want string
		warn               bool
	}{
		{"http://192.0.2.7:8080", "127.0.0.1:8080", "http://192.0.2.7:8080/join?t=", false},
		{"", "192.0.2.9:8080", "http://192.0.2.9:8080/join?t=", false},
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080/join?t=", true},
		{"", "localhost:8080", "http://localhost:8080/join?t=", true},
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
			return rec
		}
		rec := get("/join/show")
		page := rec.Body.String()
		src, link := qrSrc.FindStringSubmatch(page), shown.FindStringSubmatch(page)
		if rec.Code != http.StatusOK || src == nil || link == nil {
			t.Fatalf("the join view: %d, without a QR code or a link: %s", rec.Code, page)
		}
		raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(src[1]))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
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
		if res.GetText() != html.UnescapeString(link[1]) || !strings.HasPrefix(res.GetText(), c.want) {
			t.Errorf("public URL %q, host %s: the QR code says %q and the view %q, want both the link %s<ticket>", c.public, c.host, res.GetText(), link[1], c.want)
		}
		if u, err := url.Parse(res.GetText()); err != nil || get(u.RequestURI()).Code != http.StatusOK {
			t.Errorf("public URL %q, host %s: the link of the QR code does not open the phone's page (%v)", c.public, c.host, err)
		}
		// The presenter panel's smaller QR code: a fresh link of its own.
		rec = get("/join/qr.png")
		img, err = png.Decode(rec.Body)
		if err != nil {
			t.Fatalf("the panel's QR code is no PNG: %v", err)
		}
		if bmp, err = gozxing.NewBinaryBitmapFromImage(img); err != nil {
			t.Fatal(err)
		}
		if res, err = zxqr.NewQRCodeReader().Decode(bmp, nil); err != nil || !strings.HasPrefix(res.GetText(), c.want) {
			t.Fatalf("the panel's QR code says %v (%v), want a link %s<ticket>", res, err, c.want)
		}
		if u, err := url.Parse(res.GetText()); err != nil || get(u.RequestURI()).Code != http.StatusOK {
			t.Errorf("public URL %q, host %s: the link of the panel's QR code does not open the phone's page (%v)", c.public, c.host, err)
		}
		if warns := strings.Contains(page, `id="join-warning"`); warns != c.warn {
			t.Errorf("public URL %q, host %s: the join view warns: %v, want %v", c.public, c.host, warns, c.warn)
		}
	}
	for _, bad := range []string{"192.0.2.7:8080", "ftp://192.0.2.7", "http://", "http://192.0.2.7:8080/somewhere"} {
		if _, err := join.New(join.Config{PhoneKey: "k", Regions: []string{"us-east"}, BrokerWSPort: 8083, PublicURL: bad}, nil); err == nil {
			t.Errorf("public URL %q accepted", bad)
		}
	}
}
