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

// FuzzRecover runs recovery on arbitrary segment contents: it never fails
// on damage, keeps a prefix, and what it keeps recovers clean.
func FuzzRecover(f *testing.F) {
	var seg []byte
	seg = append(seg, segMagic...)
	for i, m := range roundTripTests[:5] {
		seg = appendRecord(seg, m, uint64(i+1))
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add(seg[:20])
	f.Add([]byte(segMagic))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := recoverSegment(path, 1, fdatasync)
		if err != nil {
			t.Fatalf("recoverSegment: %v", err)
		}
		r.seg.f.Close()
		kept, _ := os.ReadFile(path)
		if len(data) >= int(segHeader) && bytes.HasPrefix(data, []byte(segMagic)) && !bytes.HasPrefix(data, kept) {
			t.Fatalf("recovery kept %d bytes that are not a prefix of the %d it found", len(kept), len(data))
		}
		if r.cut < 0 || (r.cut == 0) != (bytes.Equal(kept, data) || bytes.HasPrefix([]byte(segMagic), data)) {
			t.Fatalf("cut %d records, kept %d of %d bytes", r.cut, len(kept), len(data))
		}
		again, err := recoverSegment(path, 1, fdatasync)
		if err != nil {
			t.Fatal(err)
		}
		again.seg.f.Close()
		if again.cut != 0 || again.seg.last != r.seg.last || again.seg.size != int64(len(kept)) {
			t.Fatalf("second recovery cut %d, last %d, want 0, %d", again.cut, again.seg.last, r.seg.last)
		}
	})
}
