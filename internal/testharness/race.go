//go:build race

package testharness

// Race is whether the tests run under the race detector, whose shadow
// memory makes a process's resident size no measure of its own.
const Race = true
