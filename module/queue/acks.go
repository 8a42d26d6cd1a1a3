package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// ackFile holds the low watermark: every seq up to it is acked or
// dropped. It has two slots a page apart; saves alternate between them and
// overwrite in place. A torn write spoils only the slot being written, the
// other still holds the previous watermark, and since no block is
// allocated a full disk does not stop acks from being saved, which is
// when they are needed most. A slot: generation u64, watermark u64,
// CRC-32C of both.
const (
	ackFile = "acked"
	ackSlot = 4096
	ackRec  = 20
)

// openAcks opens the watermark file, creating it (atomically, so that it
// is whole or absent) when missing, and returns the newest valid slot.
func openAcks(dir string) (f *os.File, gen, wm uint64, err error) {
	path := filepath.Join(dir, ackFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.WriteFile(path, make([]byte, 2*ackSlot), 0o600); err != nil {
			return nil, 0, 0, err
		}
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, 0, err
	}
	b := make([]byte, 2*ackSlot)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	b = b[:n]
	var blank bool
	for slot := range 2 {
		if len(b) < slot*ackSlot+ackRec {
			continue
		}
		r := b[slot*ackSlot:][:ackRec]
		g := binary.LittleEndian.Uint64(r)
		if g == 0 && binary.LittleEndian.Uint64(r[8:]) == 0 {
			blank = true // never written
			continue
		}
		if crc32.Checksum(r[:16], castagnoli) == binary.LittleEndian.Uint32(r[16:]) && g > gen {
			gen, wm = g, binary.LittleEndian.Uint64(r[8:])
		}
	}
	if gen == 0 && !blank {
		return f, 0, 0, fmt.Errorf("%s: %w", path, errCorrupt)
	}
	return f, gen, wm, nil
}

// saveWatermark writes wm into the slot that does not hold the newest
// value. The generation moves on only once the slot is durable, so that
// after a failure the next try overwrites the same slot again.
func (q *Queue) saveWatermark(wm uint64) error {
	gen := q.ackGen + 1
	b := binary.LittleEndian.AppendUint64(nil, gen)
	b = binary.LittleEndian.AppendUint64(b, wm)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if _, err := q.ackf.WriteAt(b, int64(gen%2)*ackSlot); err != nil {
		return err
	}
	if err := q.fsync(q.ackf); err != nil {
		return err
	}
	q.ackGen = gen
	return nil
}

// cursor is the place of record seq in seg; seq == seg.last+1 is the end.
// seg == nil means unset.
type cursor struct {
	seg *segment
	seq uint64
	off int64
}

// segmentOf returns the index of the segment that holds seq, or -1.
func (q *Queue) segmentOf(seq uint64) int {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].last >= seq })
	if i == len(q.segs) || q.segs[i].first > seq {
		return -1
	}
	return i
}

// markDone records seq as acknowledged or dropped and moves the watermark
// over every seq below which all are done. It reports whether seq was
// pending. Callers hold q.mu.
func (q *Queue) markDone(seq uint64) bool {
	if seq <= q.wm || seq >= q.next || q.segmentOf(seq) < 0 {
		return false
	}
	if _, ok := q.done[seq]; ok {
		return false
	}
	q.done[seq] = struct{}{}
	q.advance()
	return true
}

// advance moves the watermark over done seqs and over gaps that recovery
// cut, where nothing is left to wait for.
func (q *Queue) advance() {
	for {
		if _, ok := q.done[q.wm+1]; ok {
			delete(q.done, q.wm+1)
			q.wm++
			continue
		}
		i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].last > q.wm })
		if i < len(q.segs) && q.segs[i].first > q.wm+1 {
			q.wm = q.segs[i].first - 1
			continue
		}
		return
	}
}

// reclaim deletes the segments whose every record is done. The active
// segment stays even then: its name carries the next seq across a restart.
func (q *Queue) reclaim() {
	for len(q.segs) > 1 && q.segs[0].last <= q.wm {
		s := q.segs[0]
		q.segs = q.segs[1:]
		if q.front.seg == s {
			q.front = cursor{}
		}
		if q.rc.seg == s {
			q.rc = cursor{}
		}
		s.f.Close()
		// A segment that survives here comes back at the next Open, below
		// the watermark or redelivered: at least once either way.
		if err := os.Remove(s.path); err != nil {
			q.log.Warn().Err(err).Str("segment", s.path).Msg("remove acknowledged segment")
		}
	}
}

// syncFront moves q.front to the first record above the watermark (or the
// end), reading the records that were acked since. Thanks to the sparse
// index it reads at most indexEvery of them. Callers hold q.mu.
func (q *Queue) syncFront() error {
	f := &q.front
	for {
		if f.seg == nil {
			s := q.segs[0]
			*f = cursor{s, s.first, segHeader}
		}
		s := f.seg
		switch {
		case f.seq > s.last:
			i := q.indexOf(s)
			if i == len(q.segs)-1 {
				return nil
			}
			n := q.segs[i+1]
			*f = cursor{n, n.first, segHeader}
			continue
		case f.seq > q.wm:
			return nil
		case q.wm >= s.last:
			*f = cursor{s, s.last + 1, s.size}
			continue
		}
		target := q.wm + 1
		if st := s.start(target); st.seq > f.seq {
			*f = st
		}
		sc := newScanner(s, f.off, q.fbuf)
		for f.seq < target && f.seq <= s.last {
			if _, err := q.step(f, sc); err != nil {
				q.fbuf = sc.buf
				return fmt.Errorf("seek seq %d in %s: %w", target, s.path, err)
			}
		}
		q.fbuf = sc.buf
	}
}

// indexOf returns the place of s in q.segs.
func (q *Queue) indexOf(s *segment) int {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].first >= s.first })
	if i == len(q.segs) || q.segs[i] != s {
		panic("queue: segment not in list")
	}
	return i
}

// oldest returns the head of the oldest pending record, if any.
func (q *Queue) oldest() (head, bool, error) {
	for {
		if err := q.syncFront(); err != nil {
			return head{}, false, err
		}
		f := q.front
		if f.seq > f.seg.last {
			return head{}, false, nil
		}
		if q.frontHead.seq == f.seq {
			return q.frontHead, true, nil
		}
		sc := newScanner(f.seg, f.off, q.fbuf)
		body, err := q.step(&f, sc)
		q.fbuf = sc.buf
		if err != nil {
			return head{}, false, err
		}
		if body == nil {
			// Damage, now done: the front moves past it.
			q.front = f
			continue
		}
		h, _, _, err := decodeHead(body)
		if err != nil {
			return head{}, false, fmt.Errorf("read seq %d in %s: %w", f.seq-1, f.seg.path, err)
		}
		q.frontHead = h
		return h, true, nil
	}
}

// pendingBytes is the size of the records from the oldest pending one on:
// what the queue must keep on disk and what MaxBytes bounds. Records acked
// out of order above a gap count until the gap closes, because their
// space comes back only then.
func (q *Queue) pendingBytes() (int64, error) {
	if err := q.syncFront(); err != nil {
		return 0, err
	}
	i := q.indexOf(q.front.seg)
	n := q.segs[i].size - q.front.off
	for _, s := range q.segs[i+1:] {
		n += s.size - segHeader
	}
	return n, nil
}

// sweep drops expired and too old messages from the front, so that they
// stop counting against MaxBytes even while nothing reads. Further back
// they are dropped as Read passes them.
func (q *Queue) sweep() error {
	now := q.now()
	for {
		h, ok, err := q.oldest()
		if !ok || err != nil {
			return err
		}
		reason := q.stale(h, now)
		if reason == "" {
			return nil
		}
		q.drop(h.seq, reason)
	}
}

// stale says why a message is to be dropped instead of sent, or "".
func (q *Queue) stale(h head, now time.Time) string {
	switch {
	case !h.expires.IsZero() && h.expires.Before(now):
		return reasonExpired
	case q.opts.MaxAge > 0 && now.Sub(h.enqueued) > q.opts.MaxAge:
		return reasonAge
	}
	return ""
}

func (q *Queue) drop(seq uint64, reason string) {
	if q.markDone(seq) {
		q.dropped[reason]++
		q.log.Debug().Uint64("seq", seq).Str("reason", reason).Msg("dropped message")
	}
}
