// Package connlimit bounds what a listener takes from the network: how many
// connections it holds in total and from one client address (Tracker,
// Listen), and how an attack shows in the logs: Tally counts events by
// kind as a Prometheus counter and logs each kind at most once per
// interval, with the count, so that a flood of refused connections is a
// few lines and a number, never a line per connection.
//
// Every listener of the pipeline faces the network through it: the
// embedded MQTT broker's (internal/broker), the dashboard's HTTP and
// websocket (dashboard) and storage's API (internal/httpserv). docs/SECURITY.md
// lists each listener with its limits.
package connlimit
