package queue

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// nosync skips fsync where a test opens hundreds of queues.
func nosync(*os.File) error { return nil }

// damagedQueue writes msg(1..24) into three segments of eight and returns
// the options and the segment files' bytes by first seq.
func damagedQueue(t *testing.T) (Options, map[uint64][]byte) {
	t.Helper()
	opts := testOptions(t, t.TempDir())
	opts.SegmentSize = segHeader + 8*recSize
	q, err := open(opts, nosync)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 24; i++ {
		appendAll(t, q, msg(i))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	segs := map[uint64][]byte{}
	for _, first := range []uint64{1, 9, 17} {
		b, err := os.ReadFile(filepath.Join(opts.Dir, segmentName(first)))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != segHeader+8*recSize {
			t.Fatalf("segment %d holds %d bytes, want %d", first, len(b), segHeader+8*recSize)
		}
		segs[first] = b
	}
	return opts, segs
}

// flipOffsets samples the offsets of a segment of eight records: every
// byte of the header, of the first, a middle and the last record, and
// every fifth byte elsewhere.
func flipOffsets() []int64 {
	var offs []int64
	end := segHeader + 8*recSize
	for off := int64(0); off < end; off++ {
		rec := (off - segHeader) / recSize
		if off < segHeader || rec == 0 || rec == 4 || rec == 7 || off%5 == 0 {
			offs = append(offs, off)
		}
	}
	return offs
}

// One flipped byte at any offset of any of three segments loses at most
// the record it belongs to: every record before and after it is read,
// the damaged one is counted, kept as evidence and never delivered.
func TestFlipAnyByte(t *testing.T) {
	opts, segs := damagedQueue(t)
	trials := 0
	for _, first := range []uint64{1, 9, 17} {
		for _, off := range flipOffsets() {
			trials++
			dir := t.TempDir()
			for f, b := range segs {
				if f == first {
					b = slices.Clone(b)
					b[off] ^= 0x04
				}
				if err := os.WriteFile(filepath.Join(dir, segmentName(f)), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var lost []uint64
			if off >= segHeader {
				lost = []uint64{first + uint64((off-segHeader)/recSize)}
			}
			checkFlip(t, opts, dir, lost, segs[first], off, fmt.Sprintf("flip at %d of segment %d", off, first))
			if t.Failed() {
				return
			}
		}
	}
	t.Logf("%d flips", trials)
}

func checkFlip(t *testing.T, opts Options, dir string, lost []uint64, seg []byte, off int64, what string) {
	t.Helper()
	opts.Dir = dir
	var want []uint64
	for s := uint64(1); s <= 24; s++ {
		if !slices.Contains(lost, s) {
			want = append(want, s)
		}
	}
	for round := range 2 {
		q, err := open(opts, nosync)
		if err != nil {
			t.Fatalf("%s: Open: %v", what, err)
		}
		got := readAll(t, q, 0)
		if s := seqs(got); !reflect.DeepEqual(s, want) {
			t.Errorf("%s, open %d: Read = %v, want %v", what, round, s, want)
		}
		for _, m := range got {
			if !sameMessage(m, withSeq(msg(int(m.Seq)), m.Seq)) {
				t.Errorf("%s: Read %+v, want it as appended", what, m)
			}
		}
		// Once the watermark passed the damage, it is not counted again.
		if st := q.Stats(); round == 0 && st.Corrupt != int64(len(lost)) || st.Corrupt > int64(len(lost)) || st.Depth != int64(len(want)) {
			t.Errorf("%s, open %d: Stats = %+v, want Corrupt %d, Depth %d", what, round, st, len(lost), len(want))
		}
		if round == 1 {
			// Appends go on after the damage, and seqs never repeat one
			// that was read.
			m := msg(25)
			appendAll(t, q, m)
			if m.Seq <= want[len(want)-1] {
				t.Errorf("%s: Append after recovery gave Seq %d, want above %d", what, m.Seq, want[len(want)-1])
			}
			if got := readAll(t, q, want[len(want)-1]); len(got) != 1 || got[0].ID != m.ID {
				t.Errorf("%s: Read after Append = %v, want Seq %d", what, seqs(got), m.Seq)
			}
		}
		q.Close()
	}
	if len(lost) == 0 {
		return
	}
	// The damaged record's bytes are kept as evidence.
	rec := slices.Clone(seg[segHeader+int64(lost[0]-1)%8*recSize:][:recSize])
	rec[off-segHeader-int64(lost[0]-1)%8*recSize] ^= 0x04
	if !evidenceHolds(t, dir, rec) {
		t.Errorf("%s: no evidence in %s holds the damaged record", what, filepath.Join(dir, damagedDir))
	}
}

// evidenceHolds reports whether a file in dir's damaged folder holds b.
func evidenceHolds(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(dir, damagedDir))
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, damagedDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

// Damage found while the queue is open costs the damaged record only:
// Read skips it, counts it and goes on, and what is appended after it
// survives the next Open.
func TestReadSkipsDamageWhileOpen(t *testing.T) {
	opts := testOptions(t, t.TempDir())
	opts.SegmentSize = segHeader + 8*recSize
	q := mustOpen(t, opts)
	for i := 1; i <= 20; i++ {
		appendAll(t, q, msg(i))
	}
	if got := readAll(t, q, 0); len(got) != 20 {
		t.Fatalf("Read %d messages before the damage, want 20", len(got))
	}
	// Damage seq 10 (the second record of segment 9) and the length of
	// seq 18 (the second of segment 17, the one appended to).
	for _, d := range []struct {
		first uint64
		off   int64
	}{{9, segHeader + recSize + 30}, {17, segHeader + recSize + 1}} {
		f, err := os.OpenFile(filepath.Join(opts.Dir, segmentName(d.first)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{0xee}, d.off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	want := slices.DeleteFunc(span(1, 20), func(s uint64) bool { return s == 10 || s == 18 })
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, want) {
		t.Errorf("Read after damage = %v, want %v", s, want)
	}
	if st := q.Stats(); st.Corrupt != 2 || st.Depth != 18 {
		t.Errorf("Stats = %+v, want Corrupt 2, Depth 18", st)
	}
	for i := 21; i <= 30; i++ {
		appendAll(t, q, msg(i))
	}
	want = append(want, span(21, 30)...)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, want) {
		t.Errorf("Read after appending = %v, want %v", s, want)
	}
	if err := q.Ack(want[:5]...); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = mustOpen(t, opts)
	if s := seqs(readAll(t, q, 0)); !reflect.DeepEqual(s, want[5:]) {
		t.Errorf("Read after reopening = %v, want %v", s, want[5:])
	}
	if err := q.Ack(want[5:]...); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Depth != 0 {
		t.Errorf("Stats after acking all = %+v, want Depth 0", st)
	}
}

// A message's body may hold what looks like a record, with the very seq
// that comes next. When that message is damaged in its body, the record
// its length points to is the next one, not the look-alike.
func TestDamageSkipsLookAlike(t *testing.T) {
	opts := testOptions(t, t.TempDir())
	q := mustOpen(t, opts)
	forged := &Message{ID: "forged", Output: "elsewhere", Body: []byte("not from the producer")}
	carrier := &Message{ID: "carrier", Body: append([]byte("x"), appendRecord(nil, forged, 3)...)}
	appendAll(t, q, msg(1), carrier, msg(3))
	q.Close()
	path := filepath.Join(opts.Dir, segmentName(1))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[segHeader+recSize+recHeader+seqLen+2] ^= 1 // in the carrier's ID
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, opts)
	got := readAll(t, q, 0)
	if s := seqs(got); !reflect.DeepEqual(s, []uint64{1, 3}) || got[1].ID != msg(3).ID {
		t.Errorf("Read = %v (%v), want seqs 1 and 3, the second %s", s, got, msg(3).ID)
	}
}
