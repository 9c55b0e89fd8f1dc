package testharness

import "runtime"

// MemInUse is the heap and goroutine stacks in use after a collection:
// what a test that opens many connections measures their cost by.
func MemInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
