package join

import (
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	qrcode "github.com/skip2/go-qrcode"
)

// web is the phone's page: phone.html, phone.js and, when the build
// fetched it (scripts/web-deps.sh), vendor/mqtt.min.js, mqtt.js from npm.
//
//go:embed web
var web embed.FS

// Page serves the phone's page at /join and its scripts below /join/.
// Without mqtt.js in the build, /join/mqtt.min.js answers 503 and the
// page says what is missing.
func (s *Service) Page() http.Handler {
	files, _ := fs.Sub(web, "web")
	mux := http.NewServeMux()
	serve := func(name, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, err := fs.ReadFile(files, name)
			if err != nil {
				http.Error(w, "this build has no "+name+" (make web-deps)", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", contentType)
			// The page changes with the binary; never keep an old one.
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(b)
		}
	}
	phone, expired := serve("phone.html", "text/html; charset=utf-8"), expiredPage()
	mux.HandleFunc("GET /join", func(w http.ResponseWriter, r *http.Request) {
		if !s.linkValid(r.URL.Query().Get("t")) {
			expired(w, r)
			return
		}
		phone(w, r)
	})
	mux.HandleFunc("GET /join/phone.js", serve("phone.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /join/mqtt.min.js", serve("vendor/mqtt.min.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /join/show", s.serveShow)
	mux.HandleFunc("GET /join/qr.png", s.serveQR)
	return mux
}

// expiredPage answers a join link that has expired or was withdrawn
// (and /join without one): 410 and a page that says what to do.
func expiredPage() http.HandlerFunc {
	page, _ := fs.ReadFile(web, "web/expired.html")
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusGone)
		_, _ = w.Write(page)
	}
}

// show is the join view for the projector: the QR code of a fresh join
// link, the link, the bounds, and a warning when the link names this
// machine only. It reloads itself every showRefresh, so that the link it
// shows is never old (after the presenter removed the phones, a new one).
var show = template.Must(template.ParseFS(web, "web/show.html"))

const showRefresh = 30 * time.Second

func (s *Service) serveShow(w http.ResponseWriter, r *http.Request) {
	link := s.Link(r)
	png, err := qrcode.Encode(link, qrcode.Medium, qrPixels)
	if err != nil {
		http.Error(w, "making the QR code: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = show.Execute(w, struct {
		Link, TTL, LinkTTL string
		QR                 template.URL
		Max, Refresh       int
		Loopback           bool
	}{link, minutes(s.cfg.TTL), minutes(s.cfg.LinkTTL),
		template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)),
		s.cfg.MaxPhones, int(showRefresh.Seconds()), loopbackLink(link)})
}

// serveQR answers GET /join/qr.png: the QR code of a fresh join link, for
// the dashboard's presenter panel.
func (s *Service) serveQR(w http.ResponseWriter, r *http.Request) {
	png, err := qrcode.Encode(s.Link(r), qrcode.Medium, qrPanelPixels)
	if err != nil {
		http.Error(w, "making the QR code: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(png)
}

func minutes(d time.Duration) string { return fmt.Sprintf("%.0f minutes", d.Minutes()) }
