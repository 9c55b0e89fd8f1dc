package ledger

import (
	"reflect"
	"testing"
)

func TestGaps(t *testing.T) {
	r := Range{Device: "a", Boot: 1, From: 11, To: 20}
	for _, c := range []struct {
		stored []uint64
		want   []Range
	}{
		{[]uint64{11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, nil},
		{nil, []Range{{"a", 1, 11, 20}}},
		{[]uint64{3, 9, 12, 13, 16, 20, 21}, []Range{{"a", 1, 11, 11}, {"a", 1, 14, 15}, {"a", 1, 17, 19}}},
		{[]uint64{11, 20}, []Range{{"a", 1, 12, 19}}},
	} {
		if got := Gaps(r, c.stored); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Gaps(%v, %v) = %v, want %v", r, c.stored, got, c.want)
		}
	}
}
