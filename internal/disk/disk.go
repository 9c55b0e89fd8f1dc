// Package disk tells how much room a directory's file system has left, so
// that the demo can warn before its streams' budget outgrows the disk.
package disk

import "path/filepath"

// Free returns the bytes available to this user on the file system that
// holds path, or would hold it: the nearest existing parent is asked.
func Free(path string) (uint64, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	for {
		n, err := free(p)
		if err == nil || filepath.Dir(p) == p {
			return n, err
		}
		if !notExist(err) {
			return 0, err
		}
		p = filepath.Dir(p)
	}
}
