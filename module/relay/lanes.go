package relay

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// lane is the durable queue of one rank (twin.Ranks): each rank drains
// from a queue of its own, so that a higher one overtakes a backlog
// without scanning it, and keeps its order within.
type lane struct {
	rank uint8
	q    store
	// bounded is when (r.now, UnixNano) the lane's share of
	// queue.maxBytes was last set.
	bounded atomic.Int64
}

// limiter is a queue whose bounds can change (queue.Queue.SetLimits).
type limiter interface {
	SetLimits(maxBytes int64, maxAge time.Duration, whenFull queue.Policy)
}

// lane returns the lane of rank, or rank zero's when rank has none.
func (r *Relay) lane(rank uint8) *lane {
	if l := r.lanes[rank].Load(); l != nil {
		return l
	}
	return r.lanes[0].Load()
}

// laneFor returns the lane of rank, opening its queue when it has none.
func (r *Relay) laneFor(rank uint8) (*lane, error) {
	if l := r.lanes[rank].Load(); l != nil || r.open == nil || rank == 0 {
		return r.lane(rank), nil
	}
	r.laneMu.Lock()
	defer r.laneMu.Unlock()
	if l := r.lanes[rank].Load(); l != nil {
		return l, nil
	}
	q, err := r.open(rank)
	if err != nil {
		return nil, err
	}
	l := &lane{rank: rank, q: q}
	r.lanes[rank].Store(l)
	r.bound(l, true)
	r.opened <- rank // never blocks: one send per rank, room for all
	return l, nil
}

// appendRanked queues msgs, each in the lane of its rank.
func (r *Relay) appendRanked(ctx context.Context, msgs []*queue.Message) error {
	rank := msgs[0].Rank
	if !slices.ContainsFunc(msgs, func(m *queue.Message) bool { return m.Rank != rank }) {
		return r.appendTo(ctx, rank, msgs)
	}
	// Mixed ranks (a source whose topics differ): one Append per rank,
	// the highest first. If one fails after another succeeded, the
	// producer sends all again: at least once, with the same IDs.
	for rank := twin.Ranks - 1; rank >= 0; rank-- {
		var part []*queue.Message
		for _, m := range msgs {
			if m.Rank == uint8(rank) {
				part = append(part, m)
			}
		}
		if len(part) > 0 {
			if err := r.appendTo(ctx, uint8(rank), part); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Relay) appendTo(ctx context.Context, rank uint8, msgs []*queue.Message) error {
	l, err := r.laneFor(rank)
	if err != nil {
		return err
	}
	r.bound(l, false)
	return l.q.Append(ctx, msgs...)
}

// boundEvery is how often a lane's share of queue.maxBytes is set again
// while it is appended to: at the queue's own housekeeping pace.
const boundEvery = 100 * time.Millisecond

// bound sets l's share of queue.maxBytes when more than one lane is
// open: what the other lanes leave, so that all of them together stay
// within it, but at least queue.maxBytes' minimum (1 MiB) each, so that
// a full routine backlog never makes an alarm too large to queue. Under
// backpressure a full total refuses the next message of any rank; under
// dropOldest room is made in the message's own lane. Unless now, at most
// every boundEvery.
func (r *Relay) bound(l *lane, now bool) {
	lim, ok := l.q.(limiter)
	if !ok {
		return
	}
	t := r.now().UnixNano()
	if !now && t-l.bounded.Load() < int64(boundEvery) {
		return
	}
	l.bounded.Store(t)
	c := r.config.Load()
	share, many := c.Queue.MaxBytes, false
	for i := range r.lanes {
		if o := r.lanes[i].Load(); o != nil && o != l {
			share -= o.q.Stats().Bytes
			many = true
		}
	}
	if !many {
		share = c.Queue.MaxBytes
	}
	lim.SetLimits(max(share, minLaneBytes), time.Duration(c.Queue.MaxAge), queue.ParsePolicy(c.Queue.WhenFull))
}

// minLaneBytes is the least share of queue.maxBytes a lane gets: the
// least queue.maxBytes the twin accepts.
const minLaneBytes = 1 << 20

// QueueStats adds up the queues of every rank.
func (r *Relay) QueueStats() queue.Stats {
	var sum queue.Stats
	for i := range r.lanes {
		l := r.lanes[i].Load()
		if l == nil {
			continue
		}
		st := l.q.Stats()
		sum.Depth += st.Depth
		sum.Bytes += st.Bytes
		sum.DiskBytes += st.DiskBytes
		sum.Appended += st.Appended
		sum.Acked += st.Acked
		sum.Corrupt += st.Corrupt
		sum.OldestAge = max(sum.OldestAge, st.OldestAge)
		if sum.Dropped == nil {
			sum.Dropped = maps.Clone(st.Dropped)
			continue
		}
		for k, n := range st.Dropped {
			sum.Dropped[k] += n
		}
	}
	return sum
}

// readBatch is how many messages a lane's reader takes from its queue at
// once; it reads again only once fewer than that of its rank are loose
// (read, and neither batched nor published), so that memory stays bounded
// over a million queued. Batches are bounded by batching's own limits.
const readBatch = 256

// readAhead counts, per rank, the messages read from the queues and not
// yet published (or dropped): in the workers' inboxes, held, or batched.
// A worker publishes a rank only while no higher one waits anywhere, so
// that after an outage the higher ranks drain first across all sources,
// as edgeHub drains its priorities.
type readAhead struct {
	n     [twin.Ranks]atomic.Int64
	loose [twin.Ranks]atomic.Int64  // of n, those not in a batch
	room  [twin.Ranks]chan struct{} // one token: loose fell below readBatch

	mu   sync.Mutex
	wake chan struct{} // closed and replaced when a rank's count falls to zero
}

func newReadAhead() *readAhead {
	a := &readAhead{wake: make(chan struct{})}
	for i := range a.room {
		a.room[i] = make(chan struct{}, 1)
	}
	return a
}

// wait returns once fewer than readBatch of rank are loose, or ctx's
// error.
func (a *readAhead) wait(ctx context.Context, rank uint8) error {
	for a.loose[rank].Load() >= readBatch {
		select {
		case <-a.room[rank]:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// read counts n messages of rank read from its queue.
func (a *readAhead) read(rank uint8, n int) {
	a.n[rank].Add(int64(n))
	a.loose[rank].Add(int64(n))
}

// loosen counts n messages of rank out of a batch (negative: into a batch
// or straight out).
func (a *readAhead) loosen(rank uint8, n int) {
	if left := a.loose[rank].Add(int64(n)); n < 0 && left < readBatch {
		select {
		case a.room[rank] <- struct{}{}:
		default:
		}
	}
}

// add counts n messages of rank out (negative) once published or dropped.
func (a *readAhead) add(rank uint8, n int) {
	if a.n[rank].Add(int64(n)) == 0 {
		a.mu.Lock()
		close(a.wake)
		a.wake = make(chan struct{})
		a.mu.Unlock()
	}
}

// woken is closed once a rank's count next falls to zero.
func (a *readAhead) woken() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wake
}

// above tells whether messages of a rank above rank wait.
func (a *readAhead) above(rank uint8) bool {
	for r := int(rank) + 1; r < twin.Ranks; r++ {
		if a.n[r].Load() > 0 {
			return true
		}
	}
	return false
}

// inbox is what a lane reader handed to one worker and the worker has not
// taken yet, per rank, in order. The worker always takes the highest rank
// first, so a message of a higher rank waits for none of a lower one that
// the worker has not started sending.
type inbox struct {
	ready chan struct{} // one token: something was put
	top   atomic.Int32  // the highest rank holding messages, -1 for none

	mu    sync.Mutex
	ranks [twin.Ranks][]*queue.Message
}

func newInbox() *inbox {
	b := &inbox{ready: make(chan struct{}, 1)}
	b.top.Store(-1)
	return b
}

// put adds msgs, of rank, after what the inbox holds of that rank; it
// keeps msgs, which the caller must not use again.
func (b *inbox) put(rank uint8, msgs []*queue.Message) {
	b.mu.Lock()
	if b.ranks[rank] == nil {
		b.ranks[rank] = msgs
	} else {
		b.ranks[rank] = append(b.ranks[rank], msgs...)
	}
	b.top.Store(max(b.top.Load(), int32(rank)))
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// take removes and returns everything of the highest rank held.
func (b *inbox) take() (uint8, []*queue.Message, bool) {
	b.mu.Lock()
	top := b.top.Load()
	if top < 0 {
		b.mu.Unlock()
		return 0, nil, false
	}
	msgs := b.ranks[top]
	b.ranks[top] = nil
	next := top - 1
	for next >= 0 && len(b.ranks[next]) == 0 {
		next--
	}
	b.top.Store(next)
	b.mu.Unlock()
	return uint8(top), msgs, true
}

// unget puts msgs, of rank, back before what the inbox holds of it.
func (b *inbox) unget(rank uint8, msgs []*queue.Message) {
	if len(msgs) == 0 {
		return
	}
	b.mu.Lock()
	b.ranks[rank] = slices.Concat(msgs, b.ranks[rank])
	b.top.Store(max(b.top.Load(), int32(rank)))
	b.mu.Unlock()
}

// above tells whether the inbox holds messages of a rank above rank.
func (b *inbox) above(rank uint8) bool { return b.top.Load() > int32(rank) }
