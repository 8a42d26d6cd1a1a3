package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Policy is what Append does when the queue holds MaxBytes.
type Policy int

const (
	// Backpressure refuses new messages with ErrFull until acks or drops
	// make room, so that the producer stops acknowledging its own sources.
	Backpressure Policy = iota
	// DropOldest drops the oldest pending messages (reason "full") to make
	// room: fresh readings matter more than old ones.
	DropOldest
)

func (p Policy) String() string {
	switch p {
	case Backpressure:
		return "backpressure"
	case DropOldest:
		return "dropOldest"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Reasons a message is dropped instead of delivered, the keys of
// Stats.Dropped.
const (
	reasonFull    = "full"
	reasonExpired = "expired"
	reasonAge     = "age"
)

// Options configures a Queue. Only Dir is required.
type Options struct {
	// Dir holds the queue's files; it is created 0700 if missing. One
	// process at a time: Open locks it.
	Dir string
	// MaxBytes bounds the bytes of pending messages on disk, counted from
	// the oldest pending one (see Stats.Bytes). Default 1 GiB.
	MaxBytes int64
	// MaxAge drops messages enqueued longer ago than this (reason "age").
	// Zero keeps them however old.
	MaxAge time.Duration
	// WhenFull is what Append does at MaxBytes.
	WhenFull Policy
	// SegmentSize is the size at which the log moves on to a new file;
	// space comes back a whole file at a time, so the folder holds up to
	// about MaxBytes plus one segment. Default 16 MiB, or MaxBytes/8 when
	// that is smaller (but at least 64 KiB).
	SegmentSize int64
	// Now is the clock, time.Now when nil.
	Now func() time.Time
	// Log receives recovery and housekeeping events.
	Log zerolog.Logger
}

var (
	// ErrFull is Append refusing messages under Backpressure.
	ErrFull = errors.New("queue full")
	// ErrClosed is any call on a closed Queue.
	ErrClosed = errors.New("queue closed")
	// ErrTooLarge is an Append bigger than MaxBytes (or than a record may
	// be): it would never fit, so retrying is pointless.
	ErrTooLarge = errors.New("message larger than the queue allows")
)

// How often acks are persisted and the front swept for stale messages: a
// crash re-sends at most this much of acknowledged traffic.
const flushEvery = 100 * time.Millisecond

// Queue is a durable FIFO of messages with explicit acknowledgement. All
// methods are safe for concurrent use. The Queue owns two goroutines, the
// group-commit writer and the flusher, which Close stops.
type Queue struct {
	opts  Options
	dir   string
	log   zerolog.Logger
	now   func() time.Time
	fsync func(*os.File) error
	lock  *os.File
	// ackf and ackGen are the watermark file and its newest generation,
	// used by the flusher and then by Close.
	ackf   *os.File
	ackGen uint64

	reqs     chan *appendReq
	stop     chan struct{}
	wg       sync.WaitGroup // the goroutines
	inflight sync.WaitGroup // Appends admitted before Close
	wbuf     []byte         // the writer's batch

	// syncs counts data fsyncs, for the group-commit test and benchmarks.
	syncs atomic.Int64
	// writeFailed is set when the last write failed; the writer's own.
	writeFailed bool

	mu     sync.Mutex
	closed bool
	wake   chan struct{} // closed and replaced on every commit and on Close
	segs   []*segment    // by seq; the last is the one appended to
	next   uint64        // seq of the next message; all below are committed
	wm     uint64        // every seq up to wm is acked or dropped
	done   map[uint64]struct{}
	saved  uint64 // the watermark on disk
	front  cursor // the first record above wm, kept by syncFront
	rc     cursor // where the last Read stopped, where the next one starts
	fbuf   []byte // syncFront's read buffer
	rbuf   []byte // Read's read buffer
	blocks blocks // where Read's messages come from

	frontHead                head
	appended, acked, corrupt int64
	dropped                  map[string]int64
}

// Stats is a snapshot of a Queue.
type Stats struct {
	// Depth is the number of pending messages: appended, neither acked
	// nor dropped.
	Depth int64
	// Bytes is the size on disk of the records from the oldest pending one
	// on, which MaxBytes bounds; acks above a gap free their bytes when
	// the gap closes.
	Bytes int64
	// OldestAge is how long ago the oldest pending message was enqueued.
	OldestAge time.Duration
	// DiskBytes is the size of the segment files.
	DiskBytes int64
	// Appended and Acked count messages since Open.
	Appended, Acked int64
	// Dropped counts messages dropped since Open, by reason: "full",
	// "expired" (Message.Expires passed), "age" (older than MaxAge).
	Dropped map[string]int64
	// Corrupt counts records lost to damage since Open: torn by a crash
	// or damaged on disk, found at recovery or by Read. None is delivered.
	Corrupt int64
}

// Open opens the queue in opts.Dir, creating it if needed. After a crash it
// checks every record: a torn tail is cut, a damaged record skipped, both
// counted in Stats().Corrupt; everything else is kept. Delivery resumes
// after the persisted ack watermark.
func Open(opts Options) (*Queue, error) { return open(opts, fdatasync) }

// open is Open with the fsync to use, which tests slow down to that of a
// real disk.
func open(opts Options, fsync func(*os.File) error) (*Queue, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("open queue: no folder given")
	case opts.MaxBytes < 0, opts.SegmentSize < 0, opts.MaxAge < 0:
		return nil, fmt.Errorf("open queue %s: negative MaxBytes, SegmentSize or MaxAge", opts.Dir)
	case opts.WhenFull != Backpressure && opts.WhenFull != DropOldest:
		return nil, fmt.Errorf("open queue %s: unknown policy %v", opts.Dir, opts.WhenFull)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.SegmentSize == 0 {
		// Space comes back a segment at a time, so the disk holds up to
		// MaxBytes plus about one segment: keep that an eighth.
		opts.SegmentSize = min(16<<20, max(64<<10, opts.MaxBytes/8))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	q := &Queue{
		opts:    opts,
		dir:     opts.Dir,
		log:     opts.Log,
		now:     opts.Now,
		fsync:   fsync,
		reqs:    make(chan *appendReq, 256),
		stop:    make(chan struct{}),
		wake:    make(chan struct{}),
		done:    map[uint64]struct{}{},
		dropped: map[string]int64{},
		fbuf:    make([]byte, readChunk),
		rbuf:    make([]byte, readChunk),
	}
	if err := q.recover(); err != nil {
		q.closeFiles()
		return nil, fmt.Errorf("open queue %s: %w", opts.Dir, err)
	}
	q.wg.Add(2)
	go q.writeLoop()
	go q.flushLoop()
	return q, nil
}

// recover rebuilds the in-memory index from the folder.
func (q *Queue) recover() error {
	if err := mkdirDurable(q.dir); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(q.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	q.lock = lock
	if err := lockFile(lock); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return errors.New("in use by another process")
		}
		return fmt.Errorf("lock: %w", err)
	}
	ackf, gen, wm, err := openAcks(q.dir)
	if errors.Is(err, errCorrupt) {
		// Starting over from the oldest segment re-sends what was acked:
		// at least once still holds.
		q.log.Warn().Err(err).Msg("ignoring damaged ack watermark")
	} else if err != nil {
		return err
	}
	q.ackf, q.ackGen = ackf, gen
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return err
	}
	var firsts []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp") {
			// Left by a crash inside createSegment or atomicfile.
			os.Remove(filepath.Join(q.dir, name))
		} else if first, ok := parseSegmentName(name); ok {
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	for i, first := range firsts {
		r, err := recoverSegment(filepath.Join(q.dir, segmentName(first)), first, q.fsync)
		if err != nil {
			return err
		}
		s := r.seg
		if n := len(q.segs); n > 0 && s.first <= q.segs[n-1].last {
			// Overlapping seqs cannot come from this code: damage. The
			// earlier segment wins.
			q.log.Warn().Str("segment", s.path).Msg("removing segment that overlaps the one before")
			r.cut += int64(s.count())
			s.f.Close()
			if err := os.Remove(s.path); err != nil {
				return err
			}
			s = nil
		}
		if r.header {
			q.log.Warn().Str("segment", r.seg.path).Msg("rewrote damaged segment header")
		}
		if r.cut > 0 {
			q.corrupt += r.cut
			q.log.Warn().Str("segment", r.seg.path).Int64("records", r.cut).Int64("bytes", r.cutBytes).
				Msg("cut torn or corrupt tail")
		}
		// A torn tail of the last segment is what a crash leaves: a write
		// never acknowledged. Anything else is damage.
		if r.evidence != nil && !(r.torn && i == len(firsts)-1) {
			q.keepEvidence(r.seg, r.seg.size, r.evidence)
		}
		if s != nil {
			q.segs = append(q.segs, s)
		}
	}
	q.next = wm + 1
	if n := len(q.segs); n > 0 {
		q.next = q.segs[n-1].last + 1
	}
	if q.next <= wm {
		// Acks beyond what is stored: the tail was cut after they were
		// saved. Go on after them, so that seqs never repeat.
		q.next = wm + 1
	}
	if n := len(q.segs); n == 0 || q.segs[n-1].last+1 != q.next {
		s, err := createSegment(q.dir, q.next, q.fsync)
		if err != nil {
			return err
		}
		q.segs = append(q.segs, s)
	}
	// Segments gone from the front were fully acked before the crash, even
	// if the watermark saved then lags behind.
	q.wm = max(wm, q.segs[0].first-1)
	q.advance()
	for _, s := range q.segs {
		bad := s.bad
		s.bad = nil
		for _, d := range bad {
			q.noteDamage(s, d)
		}
	}
	q.saved = wm
	q.reclaim()
	q.log.Info().Int("segments", len(q.segs)).Uint64("next", q.next).Uint64("acked", q.wm).
		Int64("corrupt", q.corrupt).Msg("queue opened")
	return nil
}

// Read returns up to max messages with Seq > after, in Seq order, waiting
// until there is at least one or ctx ends. It skips what is acked or
// dropped; expired messages and ones older than MaxAge are dropped as it
// passes them, never returned. Reading does not remove: a message comes
// back from every Read that covers it until it is acked. Messages read
// may share their Properties maps (and strings) with others: they are
// read-only.
func (q *Queue) Read(ctx context.Context, after uint64, max int) ([]*Message, error) {
	if max < 1 {
		max = 1
	}
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		msgs, seen, err := q.read(after, max)
		wake := q.wake
		q.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("read queue %s: %w", q.dir, err)
		}
		if len(msgs) > 0 {
			return msgs, nil
		}
		after = seen
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// read is Read without the waiting; it also returns the last seq it
// looked at. Callers hold q.mu.
func (q *Queue) read(after uint64, n int) (msgs []*Message, seen uint64, err error) {
	seq := max(after, q.wm) + 1
	if seq >= q.next {
		return nil, max(after, q.next-1), nil
	}
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].last >= seq })
	for i < len(q.segs) && q.segs[i].count() == 0 {
		// Recovery can leave an empty segment after a gap in seqs.
		i++
	}
	if i == len(q.segs) {
		return nil, q.next - 1, nil
	}
	c, sc, err := q.seek(q.segs[i], max(seq, q.segs[i].first))
	if err != nil {
		return nil, after, err
	}
	now := q.now()
	msgs = make([]*Message, 0, min(uint64(n), q.next-seq))
	for len(msgs) < n {
		if c.seq > c.seg.last {
			j := q.indexOf(c.seg)
			if j == len(q.segs)-1 {
				break
			}
			s := q.segs[j+1]
			c = cursor{s, s.first, segHeader}
			sc = newScanner(s, c.off, sc.buf)
			continue
		}
		body, err := q.step(&c, sc)
		if err != nil {
			return nil, after, err
		}
		if body == nil {
			continue
		}
		seq := bodySeq(body)
		if _, done := q.done[seq]; done || seq <= q.wm {
			continue
		}
		m, err := q.blocks.decode(body)
		if err != nil {
			// The checksum held, so the writer wrote it so: a bug, not
			// damage, and not to be sent as it is.
			return nil, after, fmt.Errorf("%s: %w", c.seg.path, err)
		}
		if reason := q.stale(head{seq, m.Enqueued, m.Expires}, now); reason != "" {
			q.drop(seq, reason)
			continue
		}
		msgs = append(msgs, m)
	}
	q.rc = c
	if cap(sc.buf) <= 4*readChunk {
		q.rbuf = sc.buf
	}
	q.reclaim()
	return msgs, c.seq - 1, nil
}

// seek returns a cursor and scanner at record seq of s, starting from the
// nearest known place before it.
func (q *Queue) seek(s *segment, seq uint64) (cursor, *scanner, error) {
	c := s.start(seq)
	for _, known := range []cursor{q.rc, q.front} {
		if known.seg == s && known.seq <= seq && known.seq > c.seq {
			c = known
		}
	}
	sc := newScanner(s, c.off, q.rbuf)
	for c.seq < seq && c.seq <= s.last {
		if _, err := q.step(&c, sc); err != nil {
			return c, nil, fmt.Errorf("seek seq %d in %s: %w", seq, s.path, err)
		}
	}
	return c, sc, nil
}

// Ack marks messages delivered, in any order. A segment's space comes
// back once all of its messages are acked or dropped. The watermark below
// which all are acked is saved every 100 ms and at Close; acks above it are
// kept in memory only, so after a crash those messages (and up to 100 ms
// of acks below) are delivered again, with the same ID. Acking an unknown
// or already acked seq does nothing; one not yet appended is an error.
func (q *Queue) Ack(seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	var future []uint64
	for _, s := range seqs {
		if s >= q.next {
			future = append(future, s)
		} else if q.markDone(s) {
			q.acked++
		}
	}
	q.reclaim()
	if len(future) > 0 {
		return fmt.Errorf("ack %v: not appended yet (next seq is %d)", future, q.next)
	}
	return nil
}

// Pending reports whether message seq is still queued: appended, neither
// acked nor dropped. A reader holding messages it has read checks it
// before sending one, so that what the queue dropped meanwhile (the oldest
// when full, the expired) is not sent after being counted as dropped.
func (q *Queue) Pending(seq uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq <= q.wm || seq >= q.next {
		return false
	}
	_, done := q.done[seq]
	return !done
}

// Stats returns a snapshot of the queue's counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := Stats{
		Appended: q.appended,
		Acked:    q.acked,
		Corrupt:  q.corrupt,
		Dropped:  maps.Clone(q.dropped),
		Depth:    -int64(len(q.done)),
	}
	for _, s := range q.segs {
		st.DiskBytes += s.size
		if s.last > q.wm {
			st.Depth += int64(s.last - max(q.wm, s.first-1))
		}
	}
	if q.closed {
		return st
	}
	var err error
	if st.Bytes, err = q.pendingBytes(); err != nil {
		q.log.Warn().Err(err).Msg("queue stats")
	}
	if h, ok, err := q.oldest(); ok && err == nil {
		st.OldestAge = q.now().Sub(h.enqueued)
	}
	return st
}

// SetLimits changes MaxBytes, MaxAge and WhenFull of an open queue, for a
// new configuration from the twin. Zero MaxBytes means the default 1 GiB
// and a negative MaxAge none. Lowering MaxBytes below what is pending
// drops nothing at once: the next Append finds the queue full.
// SegmentSize stays as opened.
func (q *Queue) SetLimits(maxBytes int64, maxAge time.Duration, whenFull Policy) {
	if maxBytes <= 0 {
		maxBytes = 1 << 30
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.opts.MaxBytes, q.opts.MaxAge, q.opts.WhenFull = maxBytes, max(maxAge, 0), whenFull
}

// Close waits for admitted Appends, saves the ack watermark and releases
// the folder. Later calls return ErrClosed, and so does a Read waiting in
// another goroutine.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.closed = true
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
	q.inflight.Wait()
	close(q.stop)
	q.wg.Wait()
	err := q.saveAcks()
	q.closeFiles()
	if err != nil {
		return fmt.Errorf("close queue %s: %w", q.dir, err)
	}
	return nil
}

func (q *Queue) closeFiles() {
	for _, s := range q.segs {
		s.f.Close()
	}
	if q.ackf != nil {
		q.ackf.Close()
	}
	if q.lock != nil {
		q.lock.Close() // drops the flock
	}
}

// flushLoop saves the ack watermark and sweeps stale messages off the
// front every flushEvery.
func (q *Queue) flushLoop() {
	defer q.wg.Done()
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
		}
		q.mu.Lock()
		err := q.sweep()
		q.reclaim()
		q.mu.Unlock()
		err = errors.Join(err, q.saveAcks())
		// Log a failure once, not ten times a second; it is retried.
		if err != nil && !failing {
			q.log.Warn().Err(err).Msg("queue housekeeping failed")
		} else if err == nil && failing {
			q.log.Info().Msg("queue housekeeping recovered")
		}
		failing = err != nil
	}
}

// saveAcks writes the watermark if it moved. Only the flusher and then
// Close call it, never both at once: they own ackf.
func (q *Queue) saveAcks() error {
	q.mu.Lock()
	wm, saved := q.wm, q.saved
	q.mu.Unlock()
	if wm == saved {
		return nil
	}
	if err := q.saveWatermark(wm); err != nil {
		return fmt.Errorf("save ack watermark: %w", err)
	}
	q.mu.Lock()
	q.saved = wm
	q.mu.Unlock()
	return nil
}

// ParsePolicy reads a policy as String writes it ("backpressure",
// "dropOldest"); anything else is Backpressure, which loses nothing.
func ParsePolicy(s string) Policy {
	if s == DropOldest.String() {
		return DropOldest
	}
	return Backpressure
}
