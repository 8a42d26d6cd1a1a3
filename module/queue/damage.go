package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// step moves c over the record at its place and returns the record's
// body, or nil when it jumped over a damaged place instead. Damage it
// runs into is noted (see damaged) and jumped over, so that one bad record
// never stops a reader. Callers hold q.mu and check c.seq <= c.seg.last.
func (q *Queue) step(c *cursor, sc *scanner) ([]byte, error) {
	for {
		if d, ok := c.seg.damageAt(c.off); ok {
			c.seq, c.off = d.last+1, d.end
			return nil, nil
		}
		sc.off, sc.end = c.off, c.seg.size
		body, size, err := sc.next()
		if err == io.EOF {
			err = fmt.Errorf("end of file before seq %d: %w", c.seg.last, errTorn)
		}
		if err == nil && bodySeq(body) != c.seq {
			err = fmt.Errorf("seq %d where %d belongs: %w", bodySeq(body), c.seq, errCorrupt)
		}
		if err == nil {
			c.seq++
			c.off += size
			return body, nil
		}
		if !isDamage(err) {
			return nil, fmt.Errorf("seq %d in %s: %w", c.seq, c.seg.path, err)
		}
		if err := q.damaged(*c, err); err != nil {
			return nil, err
		}
	}
}

// damaged notes damage found while open at c: the bytes up to the next
// good record of the segment hold seqs c.seq up to the one before it, or
// up to the segment's last when none follows.
func (q *Queue) damaged(c cursor, cause error) error {
	s := c.seg
	sc := newScanner(s, c.off, make([]byte, readChunk))
	at, seq, ok, err := resync(sc, c.off, s.size, c.seq-1, s.last)
	if err != nil {
		return fmt.Errorf("seq %d in %s: %w", c.seq, s.path, err)
	}
	// With nothing good after it the damage runs to the end, and past
	// it when the file is shorter than it was.
	d := damage{off: c.off, end: max(s.size, c.off+1), first: c.seq, last: s.last}
	if ok {
		d.end, d.last = at, seq-1
	}
	q.log.Warn().Err(cause).Str("segment", s.path).Uint64("seq", c.seq).Msg("damaged record in queue")
	q.noteDamage(s, d)
	return nil
}

// noteDamage adds d to s's damaged places, marks the seqs it holds done
// (they are counted in Corrupt and never delivered) and keeps its bytes as
// evidence. Callers hold q.mu.
func (q *Queue) noteDamage(s *segment, d damage) {
	i, _ := slices.BinarySearchFunc(s.bad, d.off, func(b damage, off int64) int { return int(b.off - off) })
	s.bad = slices.Insert(s.bad, i, d)
	var n int64
	for seq := max(d.first, q.wm+1); seq <= d.last; seq++ {
		if q.markDone(seq) {
			n++
		}
	}
	q.corrupt += n
	if n > 0 || d.first > d.last {
		b := make([]byte, min(d.end-d.off, maxEvidence))
		if _, err := s.f.ReadAt(b, d.off); err != nil {
			q.log.Warn().Err(err).Str("segment", s.path).Msg("read damaged record")
			return
		}
		path := q.keepEvidence(s, d.off, b)
		q.log.Warn().Str("segment", s.path).Uint64("first", d.first).Uint64("last", d.last).
			Int64("offset", d.off).Int64("bytes", d.end-d.off).Int64("records", n).Str("evidence", path).
			Msg("skipping damaged records")
	}
	if err := q.zero(s, d); err != nil {
		q.log.Warn().Err(err).Str("segment", s.path).Msg("zero damaged records")
	}
}

// zero overwrites a damaged place with zeros, which never pass for a
// record, once its evidence is kept. Which good record follows damage is
// a judgement on bytes that were not written so; zeros make every later
// Open judge as this one did, even once appends or more damage change
// what comes after it. Callers hold q.mu.
func (q *Queue) zero(s *segment, d damage) error {
	end := min(d.end, s.size)
	buf := make([]byte, min(end-d.off, readChunk))
	dirty := false
	for off := d.off; off < end; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), end-off)]
		if _, err := s.f.ReadAt(b, off); err != nil {
			return err
		}
		if !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			continue
		}
		clear(b)
		if _, err := s.f.WriteAt(b, off); err != nil {
			return err
		}
		dirty = true
	}
	if !dirty {
		return nil
	}
	return q.fsync(s.f)
}

// keepEvidence writes b, the bytes at off in s, to the damaged folder
// beside the segments, once, and returns the file's path ("" if not
// kept). The folder holds at most maxEvidenceFiles files: damage is rare,
// and a disk that rots faster fills no more of its space with it.
func (q *Queue) keepEvidence(s *segment, off int64, b []byte) string {
	dir := filepath.Join(q.dir, damagedDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		q.log.Warn().Err(err).Msg("keep damaged records")
		return ""
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) >= maxEvidenceFiles {
		return ""
	}
	path := filepath.Join(dir, fmt.Sprintf("%s@%d", filepath.Base(s.path), off))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return path
	}
	if err == nil {
		_, err = f.Write(b)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		q.log.Warn().Err(err).Msg("keep damaged records")
		os.Remove(path)
		return ""
	}
	return path
}
