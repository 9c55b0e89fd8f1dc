package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/telemetry-demo/telemetry/internal/devicecred"
	"github.com/telemetry-demo/telemetry/internal/protocol"
)

// ACL is a Mosquitto ACL file (acl_file), the rules the embedded broker
// applies as Mosquitto does:
//
//	user <name>                           the topic lines below are that user's
//	topic [read|write|readwrite|deny] <filter>
//	pattern [read|write|readwrite|deny] <filter with %c and %u>
//
// topic lines before any user line are for clients without a user name;
// pattern lines are for every client, %c replaced by its client id and %u
// by its user name (a pattern does not apply when these hold / + or #).
// What no rule allows is denied, and a deny rule wins over any allow.
//
// One difference from Mosquitto 2.0, which accepts any subscription and
// then delivers only what the client may read: here a subscription is
// refused (SUBACK 0x80) unless a read rule covers all of its filter.
type ACL struct {
	anonymous []aclRule
	users     map[string][]aclRule
	patterns  []aclRule
}

type access uint8

const (
	accessRead access = 1 << iota
	accessWrite
	accessDeny
)

type aclRule struct {
	access access
	filter string
}

// ParseACL reads a Mosquitto ACL file.
func ParseACL(file []byte) (*ACL, error) {
	a := &ACL{users: map[string][]aclRule{}}
	var user *string
	sc := bufio.NewScanner(bytes.NewReader(file))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		kw, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch kw {
		case "user":
			if rest == "" {
				return nil, fmt.Errorf("acl line %d: user without a name", n)
			}
			u := rest
			user = &u
			if _, ok := a.users[u]; !ok {
				a.users[u] = nil
			}
		case "topic", "pattern":
			r, err := parseRule(rest)
			if err != nil {
				return nil, fmt.Errorf("acl line %d: %w", n, err)
			}
			switch {
			case kw == "pattern":
				a.patterns = append(a.patterns, r)
			case user == nil:
				a.anonymous = append(a.anonymous, r)
			default:
				a.users[*user] = append(a.users[*user], r)
			}
		default:
			return nil, fmt.Errorf("acl line %d: unknown keyword %q (want user, topic or pattern)", n, kw)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return a, nil
}

func parseRule(s string) (aclRule, error) {
	acc := accessRead | accessWrite // Mosquitto's default: readwrite
	if kw, rest, ok := strings.Cut(s, " "); ok {
		switch kw {
		case "read":
			acc = accessRead
		case "write":
			acc = accessWrite
		case "readwrite":
		case "deny":
			acc = accessDeny
		default:
			return aclRule{}, fmt.Errorf("access %q: want read, write, readwrite or deny", kw)
		}
		s = strings.TrimSpace(rest)
	}
	if s == "" {
		return aclRule{}, fmt.Errorf("no topic")
	}
	return aclRule{access: acc, filter: s}, nil
}

// Allowed reports whether a client with clientID and user (empty: none)
// may publish to topic (write), or receive messages on topic or subscribe
// to filter topic (read). A shared subscription $share/<group>/<filter> is
// checked as <filter>.
func (a *ACL) Allowed(clientID, user, topic string, write bool) bool {
	if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
		_, filter, ok := strings.Cut(rest, "/")
		if !ok {
			return false
		}
		topic = filter
	}
	want := accessRead
	if write {
		want = accessWrite
	}
	rules := a.anonymous
	if user != "" {
		rules = a.users[user]
	}
	allowed := false
	check := func(r aclRule) bool { // false: denied outright
		if !filterCovers(r.filter, topic) {
			return true
		}
		if r.access&accessDeny != 0 {
			return false
		}
		if r.access&want != 0 {
			allowed = true
		}
		return true
	}
	for _, r := range rules {
		if !check(r) {
			return false
		}
	}
	for _, p := range a.patterns {
		f, ok := substitute(p.filter, clientID, user)
		if !ok {
			continue
		}
		if !check(aclRule{access: p.access, filter: f}) {
			return false
		}
	}
	return allowed
}

// substitute replaces %c and %u in a pattern; false when a value would
// add wildcards, or, for a client id, levels. A user name may hold levels,
// as Mosquitto 2.0 substitutes it: a device's user name is its topic below
// telemetry/ (internal/devicecred), matched by telemetry/%u.
func substitute(pattern, clientID, user string) (string, bool) {
	if strings.Contains(pattern, "%c") {
		if clientID == "" || strings.ContainsAny(clientID, "/+#") {
			return "", false
		}
		pattern = strings.ReplaceAll(pattern, "%c", clientID)
	}
	if strings.Contains(pattern, "%u") {
		if user == "" || strings.ContainsAny(user, "+#") {
			return "", false
		}
		pattern = strings.ReplaceAll(pattern, "%u", user)
	}
	return pattern, true
}

// filterCovers reports whether rule, a topic filter, matches every topic
// that t matches: t is a topic name or itself a filter with + and #.
func filterCovers(rule, t string) bool {
	// Wildcards at the start do not match topics starting with $ ($SYS).
	if first, _, _ := strings.Cut(rule, "/"); strings.HasPrefix(t, "$") && (first == "+" || first == "#") {
		return false
	}
	// Level by level, without splitting: this runs for every message.
	tDone := false // every level of t compared
	for {
		rl, rrest, rmore := strings.Cut(rule, "/")
		if rl == "#" {
			return true // the rest, or nothing: a/# covers a
		}
		if tDone {
			return false
		}
		sl, srest, smore := strings.Cut(t, "/")
		switch {
		case sl == "#":
			return false // t goes deeper than rule allows
		case rl == "+":
			// any one level, + included
		case sl == "+" || rl != sl:
			return false
		}
		if !rmore {
			return !smore
		}
		rule, t, tDone = rrest, srest, !smore
	}
}

// FleetACL returns base, a Mosquitto ACL file, followed by a block for each
// gateway of gateways (with the ids of the devices it speaks for, each
// beginning with the gateway's id: internal/devicecred): its user, a write
// rule for each of its devices' topics, and a deny of telemetry/+, the
// one-level topics where the device pattern telemetry/%u would let it
// publish under its own name. Mosquitto cannot match the beginning of a
// topic level, so its devices are listed one by one; the embedded broker
// applies the gateway's rule itself and needs none of this.
func FleetACL(base []byte, gateways map[devicecred.Gateway][]string) ([]byte, error) {
	if _, err := ParseACL(base); err != nil {
		return nil, fmt.Errorf("base ACL: %w", err)
	}
	users := make([]devicecred.Gateway, 0, len(gateways))
	for g := range gateways {
		users = append(users, g)
	}
	sort.Slice(users, func(i, j int) bool { return users[i].User() < users[j].User() })
	out := bytes.NewBuffer(append([]byte(nil), base...))
	if len(base) > 0 && base[len(base)-1] != '\n' {
		out.WriteByte('\n')
	}
	for _, g := range users {
		if _, ok := devicecred.ParseGateway(g.User()); !ok {
			return nil, fmt.Errorf("gateway %+v: region, type and id must each be lower-case letters, digits and dashes", g)
		}
		fmt.Fprintf(out, "\n# A gateway: it publishes for these devices only (internal/devicecred).\nuser %s\n", g.User())
		for _, id := range gateways[g] {
			t := protocol.Topic{Region: g.Region, DeviceType: g.DeviceType, Device: id}
			if !protocol.ValidName(id) || !g.SpeaksFor(t) {
				return nil, fmt.Errorf("gateway %s does not speak for device %q: its id must begin with %q", g.User(), id, g.ID+"-")
			}
			fmt.Fprintf(out, "topic write %s\n", t)
		}
		out.WriteString("topic deny telemetry/+\n")
	}
	return out.Bytes(), nil
}
