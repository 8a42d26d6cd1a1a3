package queue

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRecord(t *testing.T) {
	for _, m := range roundTripTests {
		rec := appendRecord(nil, m, 42)
		body, size, err := checkRecord(rec)
		if err != nil || size != int64(len(rec)) {
			t.Fatalf("checkRecord(%s) = %d, %v; want %d", m.ID, size, err, len(rec))
		}
		got, err := decodeBody(body)
		if err != nil {
			t.Fatalf("decodeBody(%s): %v", m.ID, err)
		}
		if !sameMessage(got, withSeq(cloneMessage(m), 42)) {
			t.Errorf("decodeBody(appendRecord(%s)) = %+v", m.ID, got)
		}
		// Every torn prefix is torn, every flipped bit is caught.
		for i := range rec {
			if _, _, err := checkRecord(rec[:i]); err == nil {
				t.Fatalf("checkRecord(%s[:%d]) = nil error", m.ID, i)
			}
		}
		for i := 0; i < len(rec); i += 1 + len(rec)/200 {
			bad := bytes.Clone(rec)
			bad[i] ^= 0x80
			if _, _, err := checkRecord(bad); err == nil {
				t.Errorf("checkRecord(%s with byte %d flipped) = nil error", m.ID, i)
			}
		}
	}
	rec := appendRecord(nil, msg(1), 1)
	rec[0], rec[1], rec[2], rec[3] = 0xff, 0xff, 0xff, 0x7f
	if _, _, err := checkRecord(rec); !errors.Is(err, errCorrupt) {
		t.Errorf("checkRecord with a huge length = %v, want errCorrupt", err)
	}
}

func cloneMessage(m *Message) *Message {
	c := *m
	c.Properties = cloneMap(m.Properties)
	return &c
}

// FuzzDecode feeds arbitrary bytes to the record decoder: it never panics,
// and what it accepts encodes back to an equal message.
func FuzzDecode(f *testing.F) {
	for _, m := range roundTripTests[:5] {
		rec := appendRecord(nil, m, 7)
		f.Add(rec)
		f.Add(rec[recHeader:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if body, _, err := checkRecord(b); err == nil {
			decodeBody(body)
		}
		m, err := decodeBody(b)
		if err != nil {
			return
		}
		body, _, err := checkRecord(appendRecord(nil, m, m.Seq))
		if err != nil {
			t.Fatalf("record of a decoded message does not check: %v", err)
		}
		again, err := decodeBody(body)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", m, again, err)
		}
	})
}

// FuzzRecover opens a folder of up to three arbitrary segment files, the
// first one's seq 1, the others' chosen, and reads everything. Recovery
// never fails on damage and Read never fails or panics; every message read
// was a whole record in the files (never a damaged one), in seq order;
// appends go on above what was read; and a second Open reads the same
// again.
func FuzzRecover(f *testing.F) {
	seg := func(first uint64, msgs ...*Message) []byte {
		b := []byte(segMagic)
		for i, m := range msgs {
			b = appendRecord(b, m, first+uint64(i))
		}
		return b
	}
	s1, s2, s3 := seg(1, roundTripTests[:5]...), seg(6, msg(6), msg(7), msg(8)), seg(9, msg(9), msg(10))
	flip := func(b []byte, off int) []byte {
		b = bytes.Clone(b)
		b[off] ^= 0x20
		return b
	}
	f.Add(s1, s2, s3, uint64(6), uint64(9))
	f.Add(s1[:len(s1)-3], s2, s3, uint64(6), uint64(9))
	f.Add(flip(s1, 40), flip(s2, 2), s3[:len(s3)-1], uint64(6), uint64(9))
	f.Add(flip(s1, int(segHeader)+1), flip(s2, len(s2)-1), s3, uint64(6), uint64(9))
	// The empty segment after a gap in seqs: the first segment's tail cut,
	// the second's header emptied, the third gone.
	f.Add(s1[:len(s1)-10], []byte{}, []byte(nil), uint64(6), uint64(0))
	f.Add(s1[:20], []byte(segMagic), s3, uint64(6), uint64(9))
	f.Add([]byte{}, []byte{}, []byte{}, uint64(0), uint64(0))
	f.Fuzz(checkRecoverFiles)
}

func checkRecoverFiles(t *testing.T, s1, s2, s3 []byte, first2, first3 uint64) {
	dir := t.TempDir()
	files := map[uint64][]byte{1: s1}
	// Seqs far from 1 add nothing but the overflow of seqs no queue
	// reaches.
	first2, first3 = first2%(1<<20), first3%(1<<20)
	if first2 > 1 {
		files[first2] = s2
	}
	if first3 > 1 && first3 != first2 {
		files[first3] = s3
	}
	for first, b := range files {
		if err := os.WriteFile(filepath.Join(dir, segmentName(first)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{Dir: dir, SegmentSize: 64 << 10}
	q, err := open(opts, nosync)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer q.Close()
	got := readAll(t, q, 0)
	for i, m := range got {
		if i > 0 && m.Seq <= got[i-1].Seq {
			t.Fatalf("Read seq %d after %d", m.Seq, got[i-1].Seq)
		}
		if !inFiles(files, m) {
			t.Fatalf("Read %+v, which is no whole record in the files", m)
		}
	}
	if st := q.Stats(); st.Depth != int64(len(got)) {
		t.Fatalf("Depth %d after reading %d messages", st.Depth, len(got))
	}
	m := &Message{ID: "after"}
	appendAll(t, q, m)
	if len(got) > 0 && m.Seq <= got[len(got)-1].Seq {
		t.Fatalf("Append gave seq %d after reading seq %d", m.Seq, got[len(got)-1].Seq)
	}
	want := append(seqs(got), m.Seq)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = open(opts, nosync)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer q.Close()
	if again := seqs(readAll(t, q, 0)); !reflect.DeepEqual(again, want) {
		t.Fatalf("second Open reads %v, first read %v", again, want)
	}
}

// inFiles reports whether m is the message of a whole record, with its
// seq, at some offset of one of files.
func inFiles(files map[uint64][]byte, m *Message) bool {
	for _, b := range files {
		for off := 0; off+minRecord <= len(b); off++ {
			if bodySeq(b[off+recHeader:]) != m.Seq {
				continue
			}
			body, _, err := checkRecord(b[off:])
			if err != nil || bodySeq(body) != m.Seq {
				continue
			}
			if d, err := decodeBody(body); err == nil && sameMessage(d, m) {
				return true
			}
		}
	}
	return false
}

// Appending a record to a buffer with room allocates nothing, properties
// included.
func TestAppendRecordAllocs(t *testing.T) {
	m := msg(1)
	m.Properties = map[string]string{"line": "3", "mqtt-topic": "plant/line1", "site": "north"}
	buf := make([]byte, 0, 4096)
	if got := testing.AllocsPerRun(100, func() { appendRecord(buf, m, 1) }); got > 0 {
		t.Errorf("appendRecord makes %v allocations, want none", got)
	}
}

// Reading a backlog of readings from one source costs about one
// allocation per message, its ID: the rest (the strings every message of
// a source repeats, the property map, bodies, the Message values) is
// shared or carved from larger blocks.
func TestReadAllocs(t *testing.T) {
	q := mustOpen(t, testOptions(t, t.TempDir()))
	const n = 256
	msgs := make([]*Message, n)
	for i := range msgs {
		msgs[i] = msg(i)
		msgs[i].Properties["mqtt-topic"] = "plant/line1"
	}
	if err := q.Append(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	var got []*Message
	allocs := testing.AllocsPerRun(20, func() {
		var err error
		if got, err = q.Read(t.Context(), 0, n); err != nil || len(got) != n {
			t.Fatalf("Read = %d messages, %v; want %d", len(got), err, n)
		}
	})
	for i, m := range got {
		if want := withSeq(cloneMessage(msgs[i]), uint64(i+1)); !sameMessage(m, want) {
			t.Fatalf("Read()[%d] = %+v, want %+v", i, m, want)
		}
	}
	if per := allocs / n; per > 1.2 {
		t.Errorf("Read makes %.2f allocations per message, want at most 1.2", per)
	}
}

// recordSizeHint bounds a record's size, so that Append's buffer is
// allocated once.
func TestRecordSizeHint(t *testing.T) {
	for _, m := range roundTripTests {
		if n, hint := len(appendRecord(nil, m, 1<<63)), recordSizeHint(m); hint < n {
			t.Errorf("recordSizeHint(%s) = %d, record of %d bytes", m.ID, hint, n)
		}
	}
}
