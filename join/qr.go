package join

import (
	"net"
	"net/http"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// qrPixels is the QR code's size: large enough to scan from the back of
// a room once a projector enlarges the join view.
const qrPixels = 512

// Link is the join link phones open: PublicURL/join, or, without one,
// the address the request r came to.
func (s *Service) Link(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL + "/join"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/join"
}

// loopbackLink reports whether link names this machine only, where no
// phone can follow it.
func loopbackLink(link string) bool {
	host := strings.TrimPrefix(strings.TrimPrefix(link, "http://"), "https://")
	host, _, _ = strings.Cut(host, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// serveQR answers GET /join/qr.png: the join link as a QR code.
func (s *Service) serveQR(w http.ResponseWriter, r *http.Request) {
	png, err := qrcode.Encode(s.Link(r), qrcode.Medium, qrPixels)
	if err != nil {
		http.Error(w, "making the QR code: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(png)
}
