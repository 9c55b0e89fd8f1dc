// Package chserver starts and stops a real ClickHouse server as a child
// process, with a minimal configuration and all its files under one
// directory; or a cluster of them, shards of replicas coordinated by a
// ZooKeeper (StartCluster, cluster.go). `telemetry demo` uses it when no --clickhouse address is given
// and a ClickHouse binary is on PATH; the tests use it (through
// internal/testharness) to run storage against a real database.
//
// The generated configuration is written for ClickHouse 18.16 (what Debian 12
// packages) and works on current releases too: it uses the old <yandex> root
// element, which current releases still accept, and only settings that exist
// in both. Besides a password-less default user on loopback, the server has
// the pipeline's users from deploy/clickhouse/users.d/telemetry.xml, the file
// compose mounts (telemetry_writer and the read-only telemetry_reader).
package chserver
