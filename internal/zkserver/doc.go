// Package zkserver starts and stops a real ZooKeeper server as a child
// process, standalone, on a loopback port, with its configuration and data
// under one directory. It is what a replicated ClickHouse (a cluster of
// ReplicatedReplacingMergeTree tables, see internal/chserver's Cluster)
// coordinates through; the tests start it through internal/testharness.
//
// It runs Debian's package (apt-get install zookeeper): the server class
// from /usr/share/java/zookeeper.jar, whose manifest names the jars it
// needs, on the java found on PATH.
package zkserver
