package broker

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// Mosquitto 2.0's password hash, as mosquitto_passwd writes it:
// $7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512 of the password>.
const (
	pbkdf2Iterations = 101 // mosquitto_passwd's default
	saltBytes        = 12
	hashBytes        = 64
)

// Passwords are the users of a Mosquitto password file and their hashes.
type Passwords map[string]passwordHash

type passwordHash struct {
	sha512Only bool // $6$: one round of SHA-512 over password and salt
	iterations int
	salt, sum  []byte
}

// ParsePasswords reads a Mosquitto password file: one user:hash a line,
// hashes $7$ (PBKDF2-SHA512, mosquitto_passwd's default) or $6$ (SHA-512,
// Mosquitto 1.x). Plain-text passwords are refused: the file must be made
// with mosquitto_passwd (or HashPassword).
func ParsePasswords(file []byte) (Passwords, error) {
	pw := Passwords{}
	sc := bufio.NewScanner(bytes.NewReader(file))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("password file line %d: want user:hash", n)
		}
		h, err := parseHash(hash)
		if err != nil {
			return nil, fmt.Errorf("password file line %d (user %s): %w", n, user, err)
		}
		if _, dup := pw[user]; dup {
			return nil, fmt.Errorf("password file line %d: user %s listed twice", n, user)
		}
		pw[user] = h
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return pw, nil
}

func parseHash(s string) (passwordHash, error) {
	f := strings.Split(s, "$")
	var h passwordHash
	var salt, sum string
	switch {
	case len(f) == 5 && f[0] == "" && f[1] == "7":
		it, err := strconv.Atoi(f[2])
		if err != nil || it < 1 {
			return h, fmt.Errorf("bad iteration count %q", f[2])
		}
		h.iterations, salt, sum = it, f[3], f[4]
	case len(f) == 4 && f[0] == "" && f[1] == "6":
		h.sha512Only, salt, sum = true, f[2], f[3]
	default:
		return h, errors.New("not a $7$ or $6$ hash: make the file with mosquitto_passwd")
	}
	var err error
	if h.salt, err = base64.StdEncoding.DecodeString(salt); err != nil {
		return h, fmt.Errorf("salt: %w", err)
	}
	if h.sum, err = base64.StdEncoding.DecodeString(sum); err != nil || len(h.sum) != hashBytes {
		return h, fmt.Errorf("hash: want %d bytes of base64", hashBytes)
	}
	return h, nil
}

// Check reports whether password is user's.
func (p Passwords) Check(user, password string) bool {
	h, ok := p[user]
	if !ok {
		return false
	}
	var sum []byte
	if h.sha512Only {
		s := sha512.Sum512(append([]byte(password), h.salt...))
		sum = s[:]
	} else {
		var err error
		sum, err = pbkdf2.Key(sha512.New, password, h.salt, h.iterations, hashBytes)
		if err != nil {
			return false
		}
	}
	return subtle.ConstantTimeCompare(sum, h.sum) == 1
}

// Users lists the users, sorted.
func (p Passwords) Users() []string {
	users := make([]string, 0, len(p))
	for u := range p {
		users = append(users, u)
	}
	sort.Strings(users)
	return users
}

// HashPassword hashes password as mosquitto_passwd does by default ($7$,
// PBKDF2-SHA512, 101 iterations, a random 12-byte salt), for a line
// user:hash of a password file.
func HashPassword(password string) (string, error) {
	salt, sum, err := hashNew(password)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$7$%d$%s$%s", pbkdf2Iterations, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(sum)), nil
}

// hashNew is a fresh salt and the PBKDF2-SHA512 of password under it, as
// Mosquitto 2.0 hashes passwords (its password file, its dynamic security
// plugin's clients).
func hashNew(password string) (salt, sum []byte, err error) {
	salt = make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return nil, nil, err
	}
	sum, err = pbkdf2.Key(sha512.New, password, salt, pbkdf2Iterations, hashBytes)
	return salt, sum, err
}

// PasswordFile returns a Mosquitto password file with users and their
// passwords, hashed, in the order of the users' names.
func PasswordFile(users map[string]string) ([]byte, error) {
	names := make([]string, 0, len(users))
	for u := range users {
		if u == "" || strings.ContainsAny(u, ":\n") {
			return nil, fmt.Errorf("user name %q: must not be empty or hold ':' or a newline", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, u := range names {
		h, err := HashPassword(users[u])
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	return b.Bytes(), nil
}

// FleetPasswordFile returns base, a Mosquitto password file (may be
// empty), followed by a line for each device or gateway user name of users
// with its password under the fleet secret (internal/devicecred): what
// Mosquitto, which knows no fleet secret, needs to let the fleet in.
func FleetPasswordFile(base []byte, secret string, users []string) ([]byte, error) {
	if _, err := ParsePasswords(base); err != nil {
		return nil, fmt.Errorf("base password file: %w", err)
	}
	passwords := make(map[string]string, len(users))
	for _, u := range users {
		_, device := devicecred.Parse(u)
		_, gateway := devicecred.ParseGateway(u)
		if !device && !gateway {
			return nil, fmt.Errorf("user %q is neither a device's <region>/<device-type>/<device-id> nor a gateway's gateway.<region>.<device-type>.<gateway-id>", u)
		}
		passwords[u] = devicecred.Password(secret, u)
	}
	lines, err := PasswordFile(passwords)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(nil), base...), lines...), nil
}
