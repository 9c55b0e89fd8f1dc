// Package redact hides secrets in what components log and print: a URL's
// password (NATS URLs carry their credentials) is replaced with "xxxxx".
package redact

import "net/url"

// URL returns raw with its password, if any, replaced; anything that does
// not parse as a URL is returned as it is.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
