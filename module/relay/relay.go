// Package relay moves telemetry from intake to edgeHub through the durable
// queue: a message is acknowledged to its producer only once it is queued,
// and leaves the queue only once edgeHub (or IoT Hub) has acknowledged it.
// A window of publishes is in flight at once, with order kept per source:
// each source is served by one worker, which sends its messages one after
// the other. After an outage the higher drain priorities go first
// (docs/relay.md#drain-policy): each has a queue of its own, read by a
// reader of its own, and no worker publishes a priority while a higher
// one waits; order is kept within a priority. A shared token bucket caps
// the bytes sent upstream.
package relay

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// store is the durable queue.
type store interface {
	Append(ctx context.Context, msgs ...*queue.Message) error
	Read(ctx context.Context, after uint64, max int) ([]*queue.Message, error)
	Ack(seqs ...uint64) error
	Pending(seq uint64) bool
	Stats() queue.Stats
}

// hub is the session: numbered connections, and publishes started on one
// of them without waiting for the PUBACK.
type hub interface {
	WaitConnected(ctx context.Context, after uint64) (uint64, error)
	SendOn(gen uint64, output string, m *edgehub.Message) (edgehub.Pending, error)
	// Size is what m sent to output counts against edgeHub's limits
	// (edgehub.MaxMessageSize), linear in the body's length.
	Size(output string, m *edgehub.Message) int
	// Fits is Size(output, m) <= edgehub.MaxMessageSize, cheaply for a
	// message far under it.
	Fits(output string, m *edgehub.Message) bool
}

// deadLetters keeps what can never be delivered: Put returns once the
// letter is durable, or an error wrapping deadletter.ErrFull.
type deadLetters interface {
	Put(l *deadletter.Letter) error
	Stats() deadletter.Stats
}

// workers is how many publish in parallel, each for its share of the
// sources, so one slow source does not hold the others back.
const numWorkers = 4

// Relay is the pipeline. Create it with New; Run publishes.
type Relay struct {
	// lanes are the queues by rank; rank zero's is always there.
	lanes  [twin.Ranks]atomic.Pointer[lane]
	laneMu sync.Mutex // opening a lane
	open   func(rank uint8) (*queue.Queue, error)
	opened chan uint8 // ranks whose lane opened, for Run to read
	// upstream caps the bytes sent upstream (twin.Upstream), shared by
	// every worker.
	upstream *rate.Limiter

	hub hub
	log zerolog.Logger
	now func() time.Time

	config  atomic.Pointer[twin.Config]
	seen    *dedupe
	dead    deadLetters
	retry   backoff.Backoff // dead-letter writes the store refused
	Metrics *Metrics

	flush   chan chan int
	running atomic.Bool
}

// Options are a Relay's knobs; zero values take defaults.
type Options struct {
	// DedupeWindow is how many recent input $.mid values are remembered
	// to drop edgeHub's redeliveries (it delivers at least once).
	DedupeWindow int
	// DeadLetters keeps what can never be delivered. Nil, such messages
	// are held: not acknowledged to their producer, and left queued.
	DeadLetters deadLetters
	Log         zerolog.Logger
	Now         func() time.Time
	// Open opens the queue of a rank above zero (a message's Rank, see
	// twin.Ranks) when its first message comes; the queue given to New
	// holds rank zero. Nil, every message goes to that one.
	Open func(rank uint8) (*queue.Queue, error)
	// Lanes are queues of ranks above zero opened already (what an
	// earlier run left queued in them), owned by the caller.
	Lanes map[uint8]*queue.Queue
}

// New returns a Relay over q publishing to h with configuration c.
func New(q store, h hub, c twin.Config, opts Options) *Relay {
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = 10000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Relay{hub: h, log: opts.Log, now: opts.Now, seen: newDedupe(opts.DedupeWindow), flush: make(chan chan int),
		dead: opts.DeadLetters, retry: backoff.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second},
		open: opts.Open, opened: make(chan uint8, twin.Ranks), upstream: rate.NewLimiter(rate.Inf, 0)}
	r.lanes[0].Store(&lane{q: q})
	for rank, lq := range opts.Lanes {
		if rank > 0 && rank < twin.Ranks {
			r.lanes[rank].Store(&lane{rank: rank, q: lq})
		}
	}
	r.SetConfig(c)
	r.Metrics = newMetrics(r.QueueStats, opts.DeadLetters)
	return r
}

// SetConfig puts a new configuration into effect: for what is queued from
// now on, for batching, and at once for the upstream cap and TTLs.
func (r *Relay) SetConfig(c twin.Config) {
	r.config.Store(&c)
	r.setCap(c.Upstream.MaxBytesPerSecond)
	for i := range r.lanes {
		if l := r.lanes[i].Load(); l != nil {
			r.bound(l, true)
		}
	}
}

// Input takes a message edgeHub routed to one of our inputs: it is queued
// durably before Input returns, so the PUBACK that follows is a promise.
// A redelivery of a message already taken ($.mid seen) is acknowledged
// and dropped.
func (r *Relay) Input(ctx context.Context, input string, m *edgehub.Message) error {
	if m.ID != "" {
		key, c := r.seen.claim(m.ID)
		switch c {
		case seen:
			r.Metrics.Duplicates.Inc()
			return nil
		case busy:
			// Not acknowledged: if the other delivery fails, this
			// message comes again.
			return fmt.Errorf("input %s: %w", input, errBusy)
		}
		queued := false
		defer func() { r.seen.settle(key, queued) }()
		if err := r.input(ctx, input, m); err != nil {
			return err
		}
		queued = true
		return nil
	}
	return r.input(ctx, input, m)
}

// errBusy is a delivery of an input message that another delivery of it
// is queuing at the same moment.
var errBusy = errors.New("the same $.mid is being queued")

// input queues an input message.
func (r *Relay) input(ctx context.Context, input string, m *edgehub.Message) error {
	id := m.ID
	if id == "" {
		id = edgehub.NewMessageID()
	}
	props := map[string]string{}
	for k, v := range m.Properties {
		props[k] = v
	}
	props["input"] = input
	c := r.config.Load()
	qm := &queue.Message{
		ID: id, Source: "edgehub:" + input, Enqueued: r.now(), Expires: m.Expiry, Output: c.Output,
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Properties: props, Body: m.Body,
	}
	if r.tooLarge(qm) {
		if err := r.deadLetter(qm, deadletter.ReasonTooLarge, edgehub.ErrTooLarge); err != nil {
			r.Metrics.refused(err)
			return fmt.Errorf("input %s: %w", input, err)
		}
		return nil
	}
	err := r.appendTo(ctx, 0, []*queue.Message{qm})
	if errors.Is(err, queue.ErrTooLarge) {
		err = r.deadLetter(qm, deadletter.ReasonQueueLimit, err)
		if err == nil {
			return nil
		}
	}
	if err != nil {
		r.Metrics.refused(err)
		return fmt.Errorf("queue input %s: %w", input, err)
	}
	r.Metrics.Intake.WithLabelValues(qm.Source).Inc()
	return nil
}

// tooLarge tells whether m is over edgeHub's limit as it would be sent
// alone to its output.
func (r *Relay) tooLarge(m *queue.Message) bool {
	return !r.hub.Fits(m.Output, message([]*queue.Message{m}, nil))
}

// deadLetter puts m in the dead-letter store for reason (cause says why)
// and returns nil once it is durable there.
func (r *Relay) deadLetter(m *queue.Message, reason string, cause error) error {
	if r.dead == nil {
		return fmt.Errorf("no dead-letter store for %s: %w", m.ID, cause)
	}
	if err := r.dead.Put(deadletter.Of(m, reason, cause)); err != nil {
		return err
	}
	r.log.Warn().Str("reason", reason).Str("mid", m.ID).Str("source", m.Source).Int("bytes", len(m.Body)).Msg("message dead-lettered")
	return nil
}

// Append queues messages from another intake (local MQTT sources),
// counting them. A message over edgeHub's limit is dead-lettered instead
// (again, harmlessly, when the call is repeated). The queue's errors come
// back as they are.
func (r *Relay) Append(ctx context.Context, msgs ...*queue.Message) error {
	fit := msgs
	for i, m := range msgs {
		if !r.tooLarge(m) {
			if len(fit) < len(msgs) {
				fit = append(fit, m)
			}
			continue
		}
		if len(fit) == len(msgs) {
			fit = slices.Clone(msgs[:i])
		}
		if err := r.deadLetter(m, deadletter.ReasonTooLarge, edgehub.ErrTooLarge); err != nil {
			r.Metrics.refused(err)
			return err
		}
	}
	if len(fit) == 0 {
		return nil
	}
	if err := r.appendRanked(ctx, fit); err != nil {
		r.Metrics.refused(err)
		return err
	}
	for _, m := range fit {
		r.Metrics.Intake.WithLabelValues(m.Source).Inc()
	}
	return nil
}

// Flush sends what batching holds back now and returns how many messages
// went out with it.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	done := make(chan int, 1)
	select {
	case r.flush <- done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case n := <-done:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Run reads the queues and publishes until ctx ends, the highest rank
// first. Messages in flight when it ends stay queued and go out after the
// next start.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.running.Store(true)
	defer r.running.Store(false)
	ahead := newReadAhead()
	workers := make([]*worker, numWorkers)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{r: r, box: newInbox(), ahead: ahead, flush: make(chan chan int), pack: packer{hub: r.hub}}
		workers[i] = w
		wg.Go(func() { w.run(ctx) })
	}
	defer wg.Wait()

	// One reader per lane, each handing what it reads to the workers.
	readErr := make(chan error, twin.Ranks)
	var reading [twin.Ranks]bool
	read := func(rank uint8) {
		if reading[rank] {
			return
		}
		reading[rank] = true
		l := r.lanes[rank].Load()
		wg.Go(func() {
			var after uint64
			for {
				if ahead.wait(ctx, rank) != nil {
					return
				}
				msgs, err := l.q.Read(ctx, after, readBatch)
				if err != nil {
					readErr <- err
					return
				}
				after = msgs[len(msgs)-1].Seq
				hand(workers, ahead, rank, msgs)
			}
		})
	}
	for rank := range twin.Ranks {
		if r.lanes[rank].Load() != nil {
			read(uint8(rank))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case rank := <-r.opened:
			read(rank)
		case err := <-readErr:
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read queue: %w", err)
		case done := <-r.flush:
			n := 0
			for _, w := range workers {
				c := make(chan int, 1)
				select {
				case w.flush <- c:
					n += <-c
				case <-ctx.Done():
					return nil
				}
			}
			done <- n
		}
	}
}

// hand gives msgs, read from the lane of rank, to their workers' inboxes,
// a slice each, in order.
func hand(workers []*worker, ahead *readAhead, rank uint8, msgs []*queue.Message) {
	var parts [numWorkers][]*queue.Message
	for _, m := range msgs {
		m.Rank = rank
		i := shard(m.Source, numWorkers)
		parts[i] = append(parts[i], m)
	}
	ahead.read(rank, len(msgs))
	for i, p := range parts {
		if len(p) > 0 {
			workers[i].box.put(rank, p)
		}
	}
}

// shard picks a source's worker, so a source's messages go out in order.
func shard(source string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(source))
	return int(h.Sum32() % uint32(n))
}
