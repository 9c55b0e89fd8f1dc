package join

import (
	"embed"
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
	return mux
}
