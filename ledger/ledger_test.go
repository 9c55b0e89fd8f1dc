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

func TestGainedAndTop(t *testing.T) {
	got := Gained(map[string]uint64{"a": 5, "b": 2, "c": 1, "d": 4}, map[string]uint64{"a": 2, "b": 2, "c": 3})
	// a gained 3, b nothing, c went down (its process restarted: nothing
	// known gained), d is new.
	if want := map[string]uint64{"a": 3, "d": 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("gained %v, want %v", got, want)
	}
	counts := map[string]uint64{"a": 1, "b": 5, "c": 5, "d": 2}
	if got, want := Top(counts, 3), []string{"b", "c", "d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("top 3 %v, want %v", got, want)
	}
	if got := Top(counts, -1); len(got) != 4 || got[3] != "a" {
		t.Errorf("all, most first: %v", got)
	}
}
