package join

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/telemetry-demo/telemetry/internal/httpserv"
)

// linkSubject is what a join link's MAC is for; no phone's user name
// (<region>/phone/<id>) holds a space, so no MAC stands in for another.
const linkSubject = "join link"

// linkMACBytes is how much of the HMAC a join link keeps: 64 bits, so that
// the link stays short (a smaller QR code, readable from further away,
// and a link one can type). A link only lets a phone ask to join, within
// the bounds; a phone's own password keeps 128 bits.
const linkMACBytes = 8

// expiredText is the answer to an expired or withdrawn join link, on the
// phone's page and from POST /api/join.
const expiredText = "This join link has expired, or the presenter removed the phones since. Scan the QR code on the screen again."

// Broker is where phones' credentials take effect (Config.Broker).
type Broker interface {
	// Admit lets the phone in with its credential until it ends.
	Admit(ctx context.Context, c Credential) error
	// RemovePhones ends every phone credential issued until at and
	// disconnects the phones, answering how many it removed there.
	RemovePhones(at time.Time) int
}

// Remover is a broker that checks phones' credentials itself and can
// remove them: the embedded broker (internal/broker).
type Remover interface {
	RemovePhones(at time.Time) int
}

// Embedded is the embedded broker as the phones' Broker: it checks each
// phone's ticket at login, so admitting a phone asks nothing of it.
func Embedded(b Remover) Broker { return embedded{b} }

type embedded struct{ Remover }

func (embedded) Admit(context.Context, Credential) error { return nil }

// Link is a fresh join link, lasting Config.LinkTTL:
// PublicURL/join?t=<ticket>, or, without a PublicURL, on the address the
// request r came to.
func (s *Service) Link(r *http.Request) string {
	base := s.cfg.PublicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	// The link carries its end only, in whole seconds, and counts as made
	// LinkTTL before it (at most a second early), which must be after the
	// phones were last removed.
	end := s.cfg.Now().Add(s.cfg.LinkTTL).Truncate(time.Second)
	for !end.Add(-s.cfg.LinkTTL).After(s.removedAt()) {
		end = end.Add(time.Second)
	}
	e := strconv.FormatInt(end.Unix(), 36)
	return base + "/join?t=" + e + "." + s.linkMAC(e)
}

func (s *Service) linkMAC(end string) string {
	m := hmac.New(sha256.New, []byte(s.cfg.PhoneKey))
	m.Write([]byte(linkSubject))
	m.Write([]byte{0})
	m.Write([]byte(end))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:linkMACBytes])
}

// linkValid reports whether t is a join link's <end, unix seconds in base
// 36>.<MAC>, not ended, lasting no longer than LinkTTL, and made after the
// phones were last removed; in constant time for the MAC.
func (s *Service) linkValid(t string) bool {
	e, mac, ok := strings.Cut(t, ".")
	n, err := strconv.ParseInt(e, 36, 64)
	if !ok || err != nil || n <= 0 || strconv.FormatInt(n, 36) != e {
		return false
	}
	end, now := time.Unix(n, 0), s.cfg.Now()
	if !now.Before(end) || end.Sub(now) > s.cfg.LinkTTL+time.Second || !end.Add(-s.cfg.LinkTTL).After(s.removedAt()) {
		return false
	}
	return hmac.Equal([]byte(s.linkMAC(e)), []byte(mac))
}

func (s *Service) removedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed
}

// Removed is what removing the phones did.
type Removed struct {
	Phones       int `json:"phones"`       // credentials ended
	Disconnected int `json:"disconnected"` // phones the broker disconnected (Mosquitto: deleted, and disconnected if connected)
}

// RemoveAll removes every phone: their credentials end (the broker
// refuses them, and so does GET /api/journey), the broker disconnects
// them, and the join links made so far stop letting phones in. Phones may
// join again through a fresh link, which the join view shows.
func (s *Service) RemoveAll() Removed {
	now := s.cfg.Now()
	s.mu.Lock()
	if now.After(s.removed) {
		s.removed = now
	}
	r := Removed{Phones: len(s.phones)}
	s.phones = nil
	at := s.removed
	s.mu.Unlock()
	if s.cfg.Broker != nil {
		r.Disconnected = s.cfg.Broker.RemovePhones(at)
	}
	s.log.Info("phones removed by the presenter", "credentials", r.Phones, "disconnected", r.Disconnected)
	return r
}

// serveRemove answers POST /api/join/remove, the presenter's "remove all
// phones": 200 with Removed; 401 without the presenter's bearer token,
// 404 when the demo has no presenter token.
func (s *Service) serveRemove(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PresenterToken == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "removing the phones is the presenter's: start the demo with --presenter-token"})
		return
	}
	if !httpserv.HasBearer(r, s.cfg.PresenterToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="telemetry presenter"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "removing the phones needs the header Authorization: Bearer <the demo's --presenter-token>"})
		return
	}
	writeJSON(w, http.StatusOK, s.RemoveAll())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
