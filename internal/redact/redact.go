// Package redact hides secrets in what components log and print: a URL's
// password (NATS URLs carry their credentials) is replaced with "xxxxx".
package redact

import (
	"net/url"
	"strings"
)

// URL returns raw with its password, if any, replaced; anything that does
// not parse as a URL is returned as it is. raw may list several URLs with
// commas, as the servers of one region's cluster are given to nats.go:
// each is redacted.
func URL(raw string) string {
	if strings.Contains(raw, ",") {
		parts := strings.Split(raw, ",")
		for i, p := range parts {
			parts[i] = URL(p)
		}
		return strings.Join(parts, ",")
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
