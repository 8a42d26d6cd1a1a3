package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
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
	size int64
	f    *os.File
	path string
	// index marks the first readable record at or after every
	// indexEvery-th seq, so that a read starts near where it is going.
	index []mark
	// bad are the damaged places the queue knows of, in file order:
	// scans jump over them. Their seqs are done (counted in Corrupt,
	// never delivered).
	bad []damage
	// torn is set when a failed write could not be cut back, so that the
	// next write cuts it first.
	torn bool
}

func (s *segment) count() uint64 { return s.last + 1 - s.first }

// mark is the place of a record in its segment file.
type mark struct {
	seq uint64
	off int64
}

// damage is a place in a segment file that holds records first..last
// which cannot be read back: bytes [off, end) fail their checksum, or
// their length leads nowhere, or their seqs are out of line.
type damage struct {
	off, end    int64
	first, last uint64
}

// start returns the known place nearest before record seq of s.
func (s *segment) start(seq uint64) cursor {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq })
	if i == 0 {
		return cursor{s, s.first, segHeader}
	}
	return cursor{s, s.index[i-1].seq, s.index[i-1].off}
}

// damageAt returns the damaged place that holds offset off.
func (s *segment) damageAt(off int64) (damage, bool) {
	for _, d := range s.bad {
		if d.off <= off && off < d.end {
			return d, true
		}
	}
	return damage{}, false
}

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

// mkdirDurable makes dir (0700) and its missing parents durable: POSIX
// makes a new name durable only once its folder is fsync'd, so without
// it a power cut can take a fresh queue folder away with every message
// acknowledged into it. Since a crash may have come between a mkdir and
// its fsync, dir's parent is fsync'd even when dir exists, and dir itself
// too.
func mkdirDurable(dir string) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	if errors.Is(err, os.ErrNotExist) {
		if parent := filepath.Dir(dir); parent != dir {
			if err := mkdirDurable(parent); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("make %s durable: %w", dir, err)
	}
	return syncDir(dir)
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

// minRecord is the size of the smallest record: header, seq and flags.
const minRecord = recHeader + seqLen + 1

// resync looks for the first good record after damage at off, before
// end: its checksum holds, and its seq comes after prev, at most limit,
// and no further after prev than the damaged bytes could hold records.
// The damage may be in a length, so lengths are not trusted: it tries
// every offset, and checksums only where the seq fits. ok is false when no
// good record follows.
func resync(sc *scanner, off, end int64, prev, limit uint64) (at int64, seq uint64, ok bool, err error) {
	sc.end = end
	try := func(p int64) (uint64, bool, error) {
		sc.off = p
		b, err := sc.window(recHeader + seqLen)
		if err != nil {
			return 0, false, err
		}
		seq := bodySeq(b[recHeader:])
		if seq <= prev || seq > limit || seq-prev-1 > uint64(p-off)/minRecord {
			return 0, false, nil
		}
		if _, _, err := sc.next(); isDamage(err) {
			return 0, false, nil
		} else if err != nil {
			return 0, false, err
		}
		return seq, true, nil
	}
	// Where the damaged record's length points first: when the damage is
	// in its body, the record after it is there, with the seq after the
	// damaged one's, and a record that a producer's body merely contains
	// is never taken for it.
	sc.off = off
	if b, err := sc.window(recHeader); err == nil {
		if size, err := recordLen(b); err == nil && off+size+minRecord <= end {
			if seq, ok, err := try(off + size); err != nil || ok && seq == prev+2 {
				return off + size, seq, ok, err
			}
		}
	}
	for p := off + 1; p+minRecord <= end; p++ {
		if seq, ok, err := try(p); ok || err != nil {
			return p, seq, ok, err
		}
	}
	return 0, 0, false, nil
}

// isDamage tells the errors of bytes that are not what was written from
// those of reading them.
func isDamage(err error) bool { return errors.Is(err, errCorrupt) || errors.Is(err, errTorn) }

// recovered is what recovery found in one segment file.
type recovered struct {
	seg *segment
	// cut is how many records were cut off the tail; cutBytes is how much.
	// When a damaged length hides where records begin, cut is a guess.
	cut, cutBytes int64
	// evidence holds the start of the tail that was cut, unless all
	// zeros; torn is set when that tail looked like a write a crash tore.
	evidence []byte
	torn     bool
	// header is set when a damaged header was rewritten.
	header bool
}

// recoverSegment opens a segment and checks every record. Damage followed
// by good records becomes a place in seg.bad that reads skip; at damage
// that nothing good follows (a write a crash tore, above all) the file is
// cut, so that appends go on from the last good record.
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
	seg := &segment{first: first, last: first - 1, size: fi.Size(), f: f, path: path}
	rec.seg = seg
	magic := make([]byte, segHeader)
	if n, _ := f.ReadAt(magic, 0); n < len(magic) || !bytes.Equal(magic, []byte(segMagic)) {
		// Segments appear by rename once their header is durable, so this
		// is damage, not a crash. The name carries the seq and the
		// records need no header to be read: write it again.
		if seg.size < segHeader {
			if err := f.Truncate(0); err != nil {
				return rec, err
			}
			seg.size = segHeader
		}
		if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
			return rec, err
		}
		if err := fsync(f); err != nil {
			return rec, err
		}
		rec.header = true
	}
	sc := newScanner(seg, segHeader, make([]byte, readChunk))
	for {
		off := sc.off
		body, _, err := sc.next()
		if err == io.EOF {
			return rec, nil
		}
		if err == nil && bodySeq(body) != seg.last+1 {
			err = fmt.Errorf("seq %d where %d belongs: %w", bodySeq(body), seg.last+1, errCorrupt)
		}
		if err == nil {
			seq := seg.last + 1
			if n := len(seg.index); seq == first || n > 0 && (seq-first)/indexEvery != (seg.index[n-1].seq-first)/indexEvery {
				seg.index = append(seg.index, mark{seq, off})
			}
			seg.last = seq
			continue
		}
		if !isDamage(err) {
			return rec, err
		}
		cause := err
		at, seq, ok, rerr := resync(sc, off, seg.size, seg.last, math.MaxUint64)
		if rerr != nil {
			return rec, rerr
		}
		if ok {
			seg.bad = append(seg.bad, damage{off: off, end: at, first: seg.last + 1, last: seq - 1})
			seg.last = seq - 1
			sc.off = at
			continue
		}
		if rec.cut, err = countCut(f, off, seg.size); err != nil {
			return rec, err
		}
		rec.cutBytes = seg.size - off
		b := make([]byte, min(rec.cutBytes, maxEvidence))
		if _, err := f.ReadAt(b, off); err != nil {
			return rec, err
		}
		rec.torn = errors.Is(cause, errTorn) && !wholeRecord(b)
		if slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			rec.evidence = b
		}
		seg.size = off
		if err := f.Truncate(off); err != nil {
			return rec, err
		}
		return rec, fsync(f)
	}
}

// wholeRecord reports whether b is one whole record whose length alone is
// damaged: a tail that looks torn, but is not.
func wholeRecord(b []byte) bool {
	if len(b) < minRecord {
		return false
	}
	n := binary.LittleEndian.AppendUint32(nil, uint32(len(b)-recHeader))
	return recordCRC(n, b[recHeader:]) == binary.LittleEndian.Uint32(b[4:])
}

// Evidence of damage is bounded: at most maxEvidence bytes of each damaged
// place, in at most maxEvidenceFiles files.
const (
	maxEvidence      = 1 << 20
	maxEvidenceFiles = 32
)

// countCut estimates how many records lie in [off, end) of a damaged tail
// by following the length fields as long as they fit: a torn last record
// counts one.
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

// damagedDir, in the queue's folder, keeps the bytes of damaged records as
// evidence.
const damagedDir = "damaged"
