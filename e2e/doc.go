// Package e2e holds the end-to-end tests: the whole pipeline against real
// Mosquitto, real NATS (embedded nats-server, three regions) and a real
// ClickHouse, all started by the tests on free ports.
package e2e
