package queue

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Damage alone can leave an empty segment after a gap in seqs: the first
// segment's tail cut, the second's header emptied, the third removed.
// Reading must go on past the gap, not panic on the empty segment.
func TestReadAfterGapToEmptySegment(t *testing.T) {
	dir, opts := threeSegments(t)
	// Segments 1-3, 4-6, 7-9.
	first := filepath.Join(dir, segmentName(1))
	if err := os.Truncate(first, segHeader+recSize+5); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, segmentName(4)), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, segmentName(7))); err != nil {
		t.Fatal(err)
	}
	q := mustOpen(t, opts)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, []uint64{1}) {
		t.Errorf("Read = %v, want [1]", s)
	}
	m := msg(10)
	appendAll(t, q, m)
	if got := readAll(t, q, 1); len(got) != 1 || got[0].ID != m.ID {
		t.Errorf("Read after the gap = %v, want the message appended after it", seqs(got))
	}
}
