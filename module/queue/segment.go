package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A segment file holds consecutive records; its name is the seq of its
// first record, zero-padded so that names sort like seqs.
const (
	segMagic  = "EDGEQ\x00\x01\n" // name and format version
	segHeader = int64(len(segMagic))
	segExt    = ".seg"
	// indexEvery spaces the offsets a segment remembers: with 256 a Read
	// that starts anywhere skips at most 255 records (~70 KiB at 256-byte
	// messages), and a million-message backlog costs 32 KiB of index.
	indexEvery = 256
	// readChunk is how much a scanner reads at once.
	readChunk = 64 << 10
)

// segment is what the queue keeps in memory of one file: no per-message
// state, so that RAM does not grow with the backlog.
type segment struct {
	first, last uint64 // last == first-1 while empty
	// size is the committed length: records beyond it are not fsync'd yet
	// and never read.
	size  int64
	f     *os.File
	path  string
	index []int64 // index[i]: offset of record first+i*indexEvery
	// torn is set when a failed write could not be cut back, so that the
	// next write cuts it first.
	torn bool
}

func (s *segment) count() uint64 { return s.last + 1 - s.first }

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segExt) }

// parseSegmentName returns the first seq a segment file name carries.
func parseSegmentName(name string) (uint64, bool) {
	num, ok := strings.CutSuffix(name, segExt)
	if !ok || len(num) != 20 {
		return 0, false
	}
	first, err := strconv.ParseUint(num, 10, 64)
	return first, err == nil && first > 0
}

// createSegment makes an empty segment whose first record will be first.
// It appears under its name only once its header is durable, so that a
// crash never leaves a half-made segment behind.
func createSegment(dir string, first uint64, fsync func(*os.File) error) (_ *segment, err error) {
	path := filepath.Join(dir, segmentName(first))
	tmp := filepath.Join(dir, "."+segmentName(first)+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create segment %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("create segment %s: %w", path, err)
		}
	}()
	if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
		return nil, err
	}
	if err := fsync(f); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		os.Remove(path)
		return nil, err
	}
	return &segment{first: first, last: first - 1, size: segHeader, f: f, path: path}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// scanner reads the records of one segment from off up to end, a chunk at
// a time, through ReadAt so that it shares the file with the writer.
type scanner struct {
	r        io.ReaderAt
	off, end int64
	buf      []byte
	bufOff   int64 // file offset of buf[0]
	n        int   // valid bytes in buf
}

func newScanner(s *segment, off int64, buf []byte) *scanner {
	return &scanner{r: s.f, off: off, end: s.size, buf: buf[:cap(buf)]}
}

// next returns the body of the record at off (valid until the next call)
// and its size, and moves past it. At end it returns io.EOF.
func (sc *scanner) next() (body []byte, size int64, err error) {
	if sc.off >= sc.end {
		return nil, 0, io.EOF
	}
	b, err := sc.window(recHeader)
	if err != nil {
		return nil, 0, err
	}
	size, err = recordLen(b)
	if err != nil {
		return nil, 0, err
	}
	if b, err = sc.window(size); err != nil {
		return nil, 0, err
	}
	body, size, err = checkRecord(b)
	if err != nil {
		return nil, 0, err
	}
	sc.off += size
	return body, size, nil
}

// window returns need bytes from off, reading ahead a chunk when the
// buffer does not hold them.
func (sc *scanner) window(need int64) ([]byte, error) {
	if sc.end-sc.off < need {
		return nil, errTorn
	}
	if sc.off >= sc.bufOff && sc.off+need <= sc.bufOff+int64(sc.n) {
		return sc.buf[sc.off-sc.bufOff : sc.off-sc.bufOff+need], nil
	}
	want := min(max(need, readChunk), sc.end-sc.off)
	if int64(len(sc.buf)) < want {
		sc.buf = make([]byte, want)
	}
	n, err := sc.r.ReadAt(sc.buf[:want], sc.off)
	sc.bufOff, sc.n = sc.off, n
	if int64(n) < need {
		if err == nil || errors.Is(err, io.EOF) {
			err = errTorn
		}
		return nil, err
	}
	return sc.buf[:need], nil
}

// recovered is what recovery found in one segment file.
type recovered struct {
	seg *segment
	// cut is how many records were cut off the tail; cutBytes is how much.
	cut, cutBytes int64
}

// recoverSegment opens a segment, checks every record and cuts the file at
// the first one that is torn, fails its checksum or breaks the seq chain.
// Everything before it is kept.
func recoverSegment(path string, first uint64, fsync func(*os.File) error) (rec recovered, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return rec, fmt.Errorf("open segment %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			err = fmt.Errorf("recover segment %s: %w", path, err)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return rec, err
	}
	seg := &segment{first: first, last: first - 1, size: segHeader, f: f, path: path}
	rec.seg = seg
	magic := make([]byte, segHeader)
	if n, _ := f.ReadAt(magic, 0); n < len(magic) || !bytes.Equal(magic, []byte(segMagic)) {
		// Segments appear by rename once their header is durable, so this
		// is damage, not a crash. Keep the name, which carries the seq,
		// and count what was lost unless it was only a piece of header.
		if !bytes.HasPrefix([]byte(segMagic), magic[:n]) {
			if rec.cut, err = countCut(f, min(segHeader, fi.Size()), fi.Size()); err != nil {
				return rec, err
			}
			rec.cut = max(rec.cut, 1)
		}
		rec.cutBytes = fi.Size()
		if err := f.Truncate(0); err != nil {
			return rec, err
		}
		if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
			return rec, err
		}
		return rec, fsync(f)
	}
	seg.size = fi.Size()
	sc := newScanner(seg, segHeader, make([]byte, readChunk))
	for {
		off := sc.off
		body, _, err := sc.next()
		if err == nil && bodySeq(body) != seg.last+1 {
			err = fmt.Errorf("seq %d where %d belongs: %w", bodySeq(body), seg.last+1, errCorrupt)
		}
		if err == io.EOF {
			return rec, nil
		}
		if err != nil {
			if !errors.Is(err, errTorn) && !errors.Is(err, errCorrupt) {
				return rec, err
			}
			if rec.cut, err = countCut(f, off, seg.size); err != nil {
				return rec, err
			}
			rec.cutBytes = seg.size - off
			seg.size = off
			if err := f.Truncate(off); err != nil {
				return rec, err
			}
			return rec, fsync(f)
		}
		if (seg.last+1-seg.first)%indexEvery == 0 {
			seg.index = append(seg.index, off)
		}
		seg.last++
	}
}

// countCut estimates how many records lie in [off, end) of a damaged tail
// by following the length fields as long as they fit: a torn last record
// counts one, a flipped byte in a body counts that record and every one
// after it.
func countCut(r io.ReaderAt, off, end int64) (int64, error) {
	var n int64
	hdr := make([]byte, recHeader)
	for off < end {
		n++
		if _, err := r.ReadAt(hdr, off); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return 0, err
		}
		size, err := recordLen(hdr)
		if err != nil {
			break
		}
		off += size
	}
	return n, nil
}
