package join

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
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
	mux.HandleFunc("GET /join", serve("phone.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /join/phone.js", serve("phone.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /join/mqtt.min.js", serve("vendor/mqtt.min.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /join/qr.png", s.serveQR)
	mux.HandleFunc("GET /join/show", s.serveShow)
	return mux
}

// show is the join view for the projector: the QR code of the join link,
// the link, the bounds, and a warning when the link names this machine
// only.
var show = template.Must(template.ParseFS(web, "web/show.html"))

func (s *Service) serveShow(w http.ResponseWriter, r *http.Request) {
	link := s.Link(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_ = show.Execute(w, struct {
		Link, TTL string
		Max       int
		Loopback  bool
	}{link, fmt.Sprintf("%.0f minutes", s.cfg.TTL.Minutes()), s.cfg.MaxPhones, loopbackLink(link)})
}
