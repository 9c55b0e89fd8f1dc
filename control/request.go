package control

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// RelaySubject is where the relay takes its requests.
const RelaySubject = "control.relay"

// SignatureHeader carries a request's signature: hex HMAC-SHA256 of its
// body, keyed with the presenter token.
const SignatureHeader = "Telemetry-Signature"

// Bounds of the requests a relay accepts.
const (
	// MaxWindow is the longest a cut may last before it heals itself.
	MaxWindow = 2 * time.Minute
	// MaxSkew is how far a request's time may be from the relay's clock.
	MaxSkew = 30 * time.Second
	// maxNonces bounds the nonces remembered against replay. Policy when
	// full: the oldest is forgotten; it is older than MaxSkew long before
	// that at any rate a presenter clicks.
	maxNonces = 4096
)

// Actions of a request.
const (
	ActionCut  = "cut"
	ActionHeal = "heal"
)

// Request asks the relay to cut or heal one of its links.
type Request struct {
	Action string `json:"action"`
	Link   string `json:"link"`
	// WindowMS is how long a cut lasts at most, in milliseconds.
	WindowMS int64  `json:"window_ms,omitempty"`
	TimeMS   int64  `json:"time_ms"`
	Nonce    string `json:"nonce"`
}

// Reply answers a Request.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// newMsg is req, stamped now with a fresh nonce and signed with token.
func newMsg(token string, req Request, now time.Time) (*nats.Msg, error) {
	req.TimeMS = now.UnixMilli()
	req.Nonce = rand.Text()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("control request: %w", err)
	}
	m := nats.NewMsg(RelaySubject)
	m.Data = body
	m.Header.Set(SignatureHeader, hex.EncodeToString(mac(token, body)))
	return m, nil
}

// mac is the signature of body: HMAC-SHA256 keyed with token.
func mac(token string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(token))
	h.Write(body)
	return h.Sum(nil)
}

// verifier checks requests: signature, freshness, no replay.
type verifier struct {
	token string

	mu    sync.Mutex
	seen  map[string]struct{}
	order []string // nonces in arrival order, for forgetting the oldest
}

func newVerifier(token string) *verifier {
	return &verifier{token: token, seen: map[string]struct{}{}}
}

// Errors of a refused request, for the reply and the refusal counter.
var (
	errNoToken   = errors.New("this relay has no presenter token: scenarios are off")
	errSignature = errors.New("bad or missing signature")
	errStale     = errors.New("request time too far from the relay's clock")
	errReplay    = errors.New("request already seen")
	errMalformed = errors.New("malformed request")
)

// check returns the request m carries, or why it is refused.
func (v *verifier) check(m *nats.Msg, now time.Time) (Request, error) {
	var req Request
	if v.token == "" {
		return req, errNoToken
	}
	got, err := hex.DecodeString(m.Header.Get(SignatureHeader))
	if err != nil || !hmac.Equal(got, mac(v.token, m.Data)) {
		return req, errSignature
	}
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Nonce == "" {
		return req, errMalformed
	}
	if d := now.Sub(time.UnixMilli(req.TimeMS)); d > MaxSkew || d < -MaxSkew {
		return req, errStale
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[req.Nonce]; ok {
		return req, errReplay
	}
	if len(v.order) == maxNonces {
		delete(v.seen, v.order[0])
		v.order = v.order[1:]
	}
	v.seen[req.Nonce] = struct{}{}
	v.order = append(v.order, req.Nonce)
	return req, nil
}

func marshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
