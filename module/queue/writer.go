package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Group commit: Append encodes its records in the caller's goroutine and
// hands them to one writer goroutine, which takes everything that queued
// up while the previous fsync ran, writes it with one write and one
// fdatasync, and then releases all those callers. A lone producer waits
// for one fsync; many share each one.
const (
	maxBatchReqs  = 1024
	maxBatchBytes = 8 << 20
)

type appendReq struct {
	buf  []byte // the records back to back, seqs not yet stamped
	n    int    // messages
	done chan appendResult
}

type appendResult struct {
	first uint64 // seq of the first message
	err   error
}

// Append makes msgs durable, in order and with consecutive Seqs, before it
// returns; it sets each Seq, and Enqueued where it is zero. It appends all
// of msgs or none. Under Backpressure a full queue returns an error
// wrapping ErrFull; a write error (disk full: syscall.ENOSPC) leaves
// nothing of msgs behind, and later Appends work once the cause is gone.
// When ctx ends first Append returns its error, but msgs may still be
// committed: at least once, not exactly once. msgs must not change until
// Append returns.
func (q *Queue) Append(ctx context.Context, msgs ...*Message) error {
	now := q.now()
	size := 0
	for _, m := range msgs {
		if m != nil {
			size += recordSizeHint(m)
		}
	}
	buf := make([]byte, 0, size)
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("append to queue: message %d is nil", i)
		}
		if m.Enqueued.IsZero() {
			m.Enqueued = now
		}
		start := len(buf)
		buf = appendRecord(buf, m, 0)
		if n := len(buf) - start - recHeader; n > maxBody {
			return fmt.Errorf("append %q to queue: %d bytes: %w", m.ID, n, ErrTooLarge)
		}
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if limit := q.opts.MaxBytes; int64(len(buf)) > limit {
		q.mu.Unlock()
		return fmt.Errorf("append %d messages to queue: %d bytes over MaxBytes %d: %w",
			len(msgs), len(buf), limit, ErrTooLarge)
	}
	// Close waits for admitted Appends before it stops the writer.
	q.inflight.Add(1)
	q.mu.Unlock()
	defer q.inflight.Done()
	if len(msgs) == 0 {
		return nil
	}
	r := &appendReq{buf: buf, n: len(msgs), done: make(chan appendResult, 1)}
	select {
	case q.reqs <- r:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case res := <-r.done:
		if res.err != nil {
			return res.err
		}
		for i, m := range msgs {
			m.Seq = res.first + uint64(i)
		}
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// writeLoop is the only goroutine that writes segments and assigns seqs.
func (q *Queue) writeLoop() {
	defer q.wg.Done()
	var reqs []*appendReq
	for {
		if len(reqs) == 0 {
			select {
			case r := <-q.reqs:
				reqs = append(reqs, r)
			case <-q.stop:
				return
			}
		}
	drain:
		for len(reqs) < maxBatchReqs {
			select {
			case r := <-q.reqs:
				reqs = append(reqs, r)
			default:
				break drain
			}
		}
		carry := q.commit(reqs)
		reqs = append(reqs[:0], carry...)
	}
}

// commit writes as many of reqs as fit into the active segment with one
// fsync and returns the rest, for the next round.
func (q *Queue) commit(reqs []*appendReq) (carry []*appendReq) {
	// q.next, seg.size, seg.last and seg.torn change only here, so this
	// goroutine reads them without the lock; it writes them under it,
	// for Read and Ack.
	q.mu.Lock()
	seg := q.segs[len(q.segs)-1]
	q.mu.Unlock()
	failAll := func(err error) []*appendReq {
		for _, r := range reqs {
			r.done <- appendResult{err: fmt.Errorf("append to queue: %w", err)}
		}
		return nil
	}
	if seg.torn {
		if err := q.cutBack(seg); err != nil {
			return failAll(err)
		}
	}
	q.mu.Lock()
	var err error
	if seg.count() > 0 && seg.last <= q.wm && (seg.size >= recycleAt || q.writeFailed) {
		err = q.recycle(seg)
	}
	q.mu.Unlock()
	if err != nil {
		return failAll(err)
	}
	if seg.count() > 0 && seg.size+int64(len(reqs[0].buf)) > q.opts.SegmentSize {
		s, err := createSegment(q.dir, q.next, q.fsync)
		if err != nil {
			return failAll(err)
		}
		q.mu.Lock()
		q.segs = append(q.segs, s)
		q.mu.Unlock()
		seg = s
	}

	// Admit under the lock, where the bound is checked against what acks
	// and drops left; encode and write outside it.
	var (
		batch []*appendReq
		size  int64
	)
	q.mu.Lock()
	i := 0
	for ; i < len(reqs); i++ {
		r := reqs[i]
		n := int64(len(r.buf))
		// A segment holds at least one request, however big.
		if (len(batch) > 0 || seg.count() > 0) && seg.size+size+n > q.opts.SegmentSize ||
			len(batch) > 0 && size+n > maxBatchBytes {
			break
		}
		err := q.makeRoom(size, n)
		if errors.Is(err, errBatchFirst) {
			break
		}
		if err != nil {
			r.done <- appendResult{err: fmt.Errorf("append %d messages to queue: %w", r.n, err)}
			continue
		}
		batch = append(batch, r)
		size += n
	}
	q.mu.Unlock()
	carry = reqs[i:]
	if len(batch) == 0 {
		return carry
	}

	buf := q.wbuf[:0]
	seq := q.next
	var index []mark
	firsts := make([]uint64, len(batch))
	for j, r := range batch {
		firsts[j] = seq
		for off := 0; off < len(r.buf); seq++ {
			rec := r.buf[off:]
			n, _ := recordLen(rec)
			stampRecord(rec[:n], seq)
			if (seq-seg.first)%indexEvery == 0 {
				index = append(index, mark{seq, seg.size + int64(len(buf)+off)})
			}
			off += int(n)
		}
		buf = append(buf, r.buf...)
	}
	if cap(buf) <= maxBatchBytes {
		q.wbuf = buf
	}

	_, err = seg.f.WriteAt(buf, seg.size)
	if err == nil {
		q.syncs.Add(1)
		err = q.fsync(seg.f)
	}
	q.writeFailed = err != nil
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		// The file was opened under its temporary name.
		err = &os.PathError{Op: pe.Op, Path: seg.path, Err: pe.Err}
	}
	if err != nil {
		// Cut the partial write off so that nothing half-written is ever
		// read or survives a restart.
		if cerr := q.cutBack(seg); cerr != nil {
			err = errors.Join(err, cerr)
		}
		for _, r := range batch {
			r.done <- appendResult{err: fmt.Errorf("append %d messages to queue: %w", r.n, err)}
		}
		return carry
	}
	q.mu.Lock()
	seg.size += int64(len(buf))
	seg.last = seq - 1
	seg.index = append(seg.index, index...)
	q.next = seq
	q.appended += int64(seq - firsts[0])
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
	for j, r := range batch {
		r.done <- appendResult{first: firsts[j]}
	}
	return carry
}

// errBatchFirst asks commit to write what it admitted before the request
// at hand: DropOldest cannot drop records not yet written.
var errBatchFirst = errors.New("commit the batch first")

// makeRoom checks that n more bytes fit under MaxBytes after the batch
// bytes admitted before them, sweeping stale messages and, under
// DropOldest, dropping the oldest. Callers hold q.mu.
func (q *Queue) makeRoom(batch, n int64) error {
	limit := q.opts.MaxBytes
	if n > limit {
		// Only after SetLimits lowered MaxBytes under an admitted Append.
		return fmt.Errorf("%d bytes over MaxBytes %d: %w", n, limit, ErrTooLarge)
	}
	pending, err := q.pendingBytes()
	if err != nil || pending+batch+n <= limit {
		return err
	}
	if err := q.sweep(); err != nil {
		return err
	}
	for {
		if pending, err = q.pendingBytes(); err != nil || pending+batch+n <= limit {
			return err
		}
		if q.opts.WhenFull == Backpressure {
			return fmt.Errorf("%d bytes pending, %d more over MaxBytes %d: %w", pending+batch, n, limit, ErrFull)
		}
		h, ok, err := q.oldest()
		if err != nil {
			return err
		}
		if !ok {
			// Nothing left on disk to drop, so batch > 0: write it, then
			// drop from it.
			return errBatchFirst
		}
		q.drop(h.seq, reasonFull)
	}
}

// cutBack truncates seg to its committed size after a failed write.
func (q *Queue) cutBack(seg *segment) error {
	err := seg.f.Truncate(seg.size)
	if err == nil {
		err = q.fsync(seg.f)
	}
	seg.torn = err != nil
	if err != nil {
		return fmt.Errorf("cut %s back to %d bytes: %w", seg.path, seg.size, err)
	}
	return nil
}

// recycleAt is the size from which an active segment whose every record is
// done is emptied before the next write.
const recycleAt = 1 << 20

// recycle empties the active segment once every record in it is done, so
// that its space comes back without waiting for it to fill (reclaim only
// deletes the others): after a disk filled up during an outage, this is
// what makes room. It is cut to its header, then renamed for the next seq,
// whose carrier across a restart its name is; a crash between leaves an
// empty segment under the old name, and recovery takes the next seq from
// the saved watermark. Callers hold q.mu; only the writer calls it.
func (q *Queue) recycle(seg *segment) error {
	if err := seg.f.Truncate(segHeader); err != nil {
		return fmt.Errorf("empty %s: %w", seg.path, err)
	}
	if err := q.fsync(seg.f); err != nil {
		return fmt.Errorf("empty %s: %w", seg.path, err)
	}
	path := filepath.Join(q.dir, segmentName(q.next))
	if err := os.Rename(seg.path, path); err != nil {
		return fmt.Errorf("empty %s: %w", seg.path, err)
	}
	if err := syncDir(q.dir); err != nil {
		return fmt.Errorf("empty %s: %w", seg.path, err)
	}
	seg.path, seg.first, seg.last, seg.size, seg.index, seg.bad = path, q.next, q.next-1, segHeader, nil, nil
	if q.front.seg == seg {
		q.front = cursor{}
	}
	if q.rc.seg == seg {
		q.rc = cursor{}
	}
	return nil
}
