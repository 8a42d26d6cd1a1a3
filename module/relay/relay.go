// Package relay moves telemetry from intake to edgeHub through the durable
// queue: a message is acknowledged to its producer only once it is queued,
// and leaves the queue only once edgeHub (or IoT Hub) has acknowledged it.
// A window of publishes is in flight at once, with order kept per source:
// each source is served by one worker, which sends its messages one after
// the other.
package relay

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

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
}

// workers is how many publish in parallel, each for its share of the
// sources, so one slow source does not hold the others back.
const numWorkers = 4

// Relay is the pipeline. Create it with New; Run publishes.
type Relay struct {
	q   store
	hub hub
	log zerolog.Logger
	now func() time.Time

	config  atomic.Pointer[twin.Config]
	seen    *dedupe
	Metrics *Metrics

	flush   chan chan int
	running atomic.Bool
}

// Options are a Relay's knobs; zero values take defaults.
type Options struct {
	// DedupeWindow is how many recent input $.mid values are remembered
	// to drop edgeHub's redeliveries (it delivers at least once).
	DedupeWindow int
	Log          zerolog.Logger
	Now          func() time.Time
}

// New returns a Relay over q publishing to h with configuration c.
func New(q store, h hub, c twin.Config, opts Options) *Relay {
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = 10000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Relay{q: q, hub: h, log: opts.Log, now: opts.Now, seen: newDedupe(opts.DedupeWindow), flush: make(chan chan int)}
	r.config.Store(&c)
	r.Metrics = newMetrics(q)
	return r
}

// SetConfig puts a new configuration into effect for what is queued from
// now on and for batching.
func (r *Relay) SetConfig(c twin.Config) { r.config.Store(&c) }

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
	if err := r.q.Append(ctx, qm); err != nil {
		r.Metrics.refused(err)
		return fmt.Errorf("queue input %s: %w", input, err)
	}
	r.Metrics.Intake.WithLabelValues(qm.Source).Inc()
	return nil
}

// Append queues messages from another intake (local MQTT sources),
// counting them; the queue's errors come back as they are.
func (r *Relay) Append(ctx context.Context, msgs ...*queue.Message) error {
	if err := r.q.Append(ctx, msgs...); err != nil {
		r.Metrics.refused(err)
		return err
	}
	for _, m := range msgs {
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

// Run reads the queue and publishes until ctx ends. Messages in flight
// when it ends stay queued and go out after the next start.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.running.Store(true)
	defer r.running.Store(false)
	workers := make([]*worker, numWorkers)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{r: r, in: make(chan *queue.Message, 64), flush: make(chan chan int)}
		workers[i] = w
		wg.Go(func() { w.run(ctx) })
	}
	defer wg.Wait()

	reads := make(chan []*queue.Message)
	readErr := make(chan error, 1)
	wg.Go(func() {
		var after uint64
		for {
			msgs, err := r.q.Read(ctx, after, 256)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case reads <- msgs:
			case <-ctx.Done():
				return
			}
			after = msgs[len(msgs)-1].Seq
		}
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read queue: %w", err)
		case msgs := <-reads:
			if !hand(ctx, workers, msgs) {
				return nil
			}
		case done := <-r.flush:
			// What has been read from the queue goes to its worker first.
			for drained := false; !drained; {
				select {
				case msgs := <-reads:
					if !hand(ctx, workers, msgs) {
						return nil
					}
				default:
					drained = true
				}
			}
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

// hand gives msgs to their workers, in order; false when ctx ends first.
func hand(ctx context.Context, workers []*worker, msgs []*queue.Message) bool {
	for _, m := range msgs {
		select {
		case workers[shard(m.Source, len(workers))].in <- m:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// shard picks a source's worker, so a source's messages go out in order.
func shard(source string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(source))
	return int(h.Sum32() % uint32(n))
}
