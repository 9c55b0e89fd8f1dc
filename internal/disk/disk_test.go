package disk

import (
	"path/filepath"
	"testing"
)

func TestFreeOfAPathNotMadeYet(t *testing.T) {
	dir := t.TempDir()
	here, err := Free(dir)
	if err != nil || here == 0 {
		t.Fatalf("Free(%s) = %d, %v", dir, here, err)
	}
	later, err := Free(filepath.Join(dir, "not", "made", "yet"))
	if err != nil || later == 0 {
		t.Fatalf("Free of a missing path = %d, %v; want its parent's", later, err)
	}
}
