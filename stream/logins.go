package stream

import (
	"crypto/subtle"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/telemetry-demo/telemetry/internal/connlimit"
)

// Reasons of telemetry_nats_refused_total.
const (
	// reasonBadLogin: an unknown user, a wrong password, or a user not
	// allowed on a client port.
	reasonBadLogin = "bad_login"
	// reasonFailedLogins: the address failed too often within the window
	// (connlimit.Failures), so even a right password is refused until
	// the window ends.
	reasonFailedLogins = "failed_logins"
)

// loginGate is the embedded servers' client authentication
// (server.Options.CustomClientAuthentication, nats-server's hook for an
// embedding program). It checks a login against the users of
// deploy/nats/accounts.conf as nats-server itself would (password in
// plain or bcrypt, allowed connection types, the user's account and
// permissions), and on top holds back an address that keeps failing:
// nats-server counts nothing per address. Leaf connections are not
// clients; the hub checks them against its leafnodes authorization.
type loginGate struct {
	users    map[string]*server.User // by name, as parsed from the config
	failures *connlimit.Failures     // shared by every server of the demo
	refused  *connlimit.Tally
	// rechecking is set while a configuration reload checks the clients
	// already in: neither held back nor counted as failures.
	rechecking atomic.Bool

	mu  sync.Mutex
	srv *server.Server // set once the server exists, for its accounts
}

// newLoginGate takes over client logins from opts: its users stay in opts
// for the gate to read, and nats-server no longer checks them itself.
// Install it on a server's options after NewServer, before Start.
func newLoginGate(opts *server.Options, failures *connlimit.Failures, refused *connlimit.Tally) *loginGate {
	g := &loginGate{users: map[string]*server.User{}, failures: failures, refused: refused}
	for _, u := range opts.Users {
		g.users[u.Username] = u
	}
	opts.CustomClientAuthentication = g
	return g
}

// serve binds the gate to the server it authenticates for.
func (g *loginGate) serve(s *server.Server) {
	g.mu.Lock()
	g.srv = s
	g.mu.Unlock()
}

// Check implements server.Authentication. A refusal here is answered by
// nats-server with "Authorization Violation" and one log line, which
// slogAdapter drops: it was counted here, with its reason.
func (g *loginGate) Check(c server.ClientAuthentication) bool {
	// A reload checks the clients already in: no address is held back or
	// counted. A connection closed meanwhile has no address (nil): its
	// login is checked all the same, its failure counted against none.
	recheck := g.rechecking.Load()
	var host string
	now := time.Now()
	if !recheck {
		host = connlimit.Host(c.RemoteAddress())
		if g.failures.Blocked(host, now) {
			g.refused.Add(reasonFailedLogins, host)
			return false
		}
	}
	user := g.authenticate(c)
	if user == nil {
		if !recheck {
			g.failures.Add(host, now)
			g.refused.Add(reasonBadLogin, host)
		}
		return false
	}
	c.RegisterUser(user)
	return true
}

// authenticate returns the user c logs in as, bound to the server's own
// account of that name, or nil.
func (g *loginGate) authenticate(c server.ClientAuthentication) *server.User {
	if c.Kind() != server.CLIENT {
		return nil
	}
	opts := c.GetOpts()
	u, ok := g.users[opts.Username]
	if !ok || !passwordMatches(u.Password, opts.Password) {
		return nil
	}
	if len(u.AllowedConnectionTypes) > 0 {
		if _, ok := u.AllowedConnectionTypes["STANDARD"]; !ok {
			return nil
		}
	}
	g.mu.Lock()
	srv := g.srv
	g.mu.Unlock()
	user := *u
	if u.Account != nil && srv != nil {
		// The parsed user points at the config's account; the server
		// runs a copy of it, looked up by name as nats-server does.
		acc, err := srv.LookupAccount(u.Account.Name)
		if err != nil {
			return nil
		}
		user.Account = acc
	}
	return &user
}

// passwordMatches compares as nats-server does: a bcrypt hash in the
// config, else the plain password in constant time.
func passwordMatches(configured, given string) bool {
	if strings.HasPrefix(configured, "$2") {
		return bcrypt.CompareHashAndPassword([]byte(configured), []byte(given)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(configured), []byte(given)) == 1
}
