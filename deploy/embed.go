// Package deploy holds the configuration files that compose mounts, embedded
// so that `telemetry demo` and the tests run the servers from the very same
// files.
package deploy

import "embed"

// NATS holds nats/*.conf: accounts.conf, region.conf and hub.conf.
//
//go:embed nats/*.conf
var NATS embed.FS
