package relay

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
)

// worker publishes the messages of the sources sharded to it, the
// highest rank first and in order within a rank, with up to window
// publishes awaiting their PUBACK, batching small JSON readings when the
// configuration asks for it.
type worker struct {
	r        *Relay
	box      *inbox
	ahead    *readAhead
	flush    chan chan int
	inflight []flight
	pack     packer // the batch being filled, all of rank
	gz       compressor
	// held is what the worker took from its inbox and has not yet sent
	// or batched, all of rank.
	held []*queue.Message
	rank uint8
	acks []uint64 // settle's buffer
}

// flight is a publish awaiting its PUBACK.
type flight struct {
	msgs    []*queue.Message
	out     *edgehub.Message
	pending edgehub.Pending
	gen     uint64 // the connection it went out on
}

func (w *worker) run(ctx context.Context) {
	var linger <-chan time.Time
	var head *queue.Message  // the batch's first member when linger was set
	var gate <-chan struct{} // while a higher rank waits at another worker
	batching := func() twin.Batching { return w.r.config.Load().Batching }
	// rearm points linger at the batch's deadline when its first member
	// changed.
	rearm := func() {
		d, ok := w.pack.deadline(batching())
		switch {
		case !ok:
			linger, head = nil, nil
		case head != w.pack.msgs[0]:
			linger, head = time.After(time.Until(d)), w.pack.msgs[0]
		}
	}
	send := func() {
		if batch := w.pack.flush(batching()); batch != nil {
			w.publish(ctx, batch)
		}
		rearm()
	}
	// yield puts back what the worker holds, for a higher rank to go
	// first: the batch, then the rest, in order.
	yield := func() {
		batch := w.pack.flush(batching())
		w.ahead.loosen(w.rank, len(batch))
		w.box.unget(w.rank, slices.Concat(batch, w.held))
		w.held = nil
		rearm()
	}
	take := func(m *queue.Message) {
		b := batching()
		if !b.Enabled || !json.Valid(m.Body) {
			send() // what came before goes first
			w.publish(ctx, []*queue.Message{m})
			return
		}
		for _, batch := range w.pack.add(m, b, time.Now()) {
			w.publish(ctx, batch)
		}
		rearm()
	}
	// pump takes what the inbox holds, the highest rank first. Before
	// each message it waits for a connection and room in the window, and
	// then looks again: a higher rank that came meanwhile (during an
	// outage, say) goes before the rest of a lower one, and while one
	// waits at another worker, this one waits for it (gate).
	pump := func() {
		gate = nil
		for ctx.Err() == nil {
			if len(w.held) == 0 {
				rank, msgs, ok := w.box.take()
				if !ok {
					return
				}
				if len(w.pack.msgs) > 0 && rank != w.rank {
					if rank > w.rank {
						yield() // the batch waits behind the higher rank
					} else {
						send() // a higher rank's batch goes first
					}
				}
				w.rank, w.held = rank, msgs
			}
			if !w.ready(ctx) {
				return
			}
			if w.box.above(w.rank) {
				yield()
				continue
			}
			if w.ahead.above(w.rank) {
				// Looked at again once the wake channel is in hand, so
				// that a higher rank draining meanwhile is not missed.
				if wake := w.ahead.woken(); w.ahead.above(w.rank) {
					yield()
					gate = wake
					return
				}
			}
			m := w.held[0]
			w.held = w.held[1:]
			w.ahead.loosen(w.rank, -1)
			take(m)
		}
	}
	for {
		var acked <-chan struct{}
		if len(w.inflight) > 0 {
			acked = w.inflight[0].pending.Done()
		}
		select {
		case <-ctx.Done():
			return
		case <-acked:
			w.settle(ctx)
		case <-w.box.ready:
			pump()
		case <-gate:
			pump()
		case <-linger:
			if w.ready(ctx) && (w.box.above(w.rank) || w.ahead.above(w.rank)) {
				yield()
				pump()
			} else {
				send()
			}
		case done := <-w.flush:
			// What has reached this worker counts as queued now.
			pump()
			n := len(w.pack.msgs)
			send()
			for len(w.inflight) > 0 && ctx.Err() == nil {
				select {
				case <-w.inflight[0].pending.Done():
					w.settle(ctx)
				case <-ctx.Done():
				}
			}
			done <- n
		}
	}
}

// ready waits for room in the window and a connection; false when ctx
// ends first.
func (w *worker) ready(ctx context.Context) bool {
	// twin.Config.InFlight: edgeHub stops reading a client at 100 pending
	// (docs/edge-protocol.md#edgehub-delivery), which slows it down but loses nothing.
	for len(w.inflight) >= w.r.config.Load().InFlight && ctx.Err() == nil {
		select {
		case <-w.inflight[0].pending.Done():
			w.settle(ctx)
		case <-ctx.Done():
		}
	}
	_, err := w.connection(ctx, 0)
	return err == nil
}

// publish sends msgs, then counts them out of what waits to be published.
func (w *worker) publish(ctx context.Context, msgs []*queue.Message) {
	w.send(ctx, msgs)
	w.ahead.add(msgs[0].Rank, -len(msgs))
}

// send starts publishing msgs as one message (a batch when more than one),
// waiting for room in the window first.
func (w *worker) send(ctx context.Context, msgs []*queue.Message) {
	r := w.r
	if !w.ready(ctx) {
		return // still queued
	}
	rank := msgs[0].Rank
	q := r.lane(rank).q
	for {
		gen, err := w.connection(ctx, 0)
		if err != nil {
			return // ctx ended; still queued
		}
		// Checked once connected, so that what the queue dropped during
		// an outage is not sent, and the counts stay exact.
		now := r.now()
		ttl := r.config.Load().Upstream.TTL(rank)
		live := msgs[:0:0]
		for _, m := range msgs {
			switch {
			case !m.Expires.IsZero() && now.After(m.Expires):
				r.Metrics.Dropped.WithLabelValues("expired").Inc()
				r.ack(rank, m.Seq)
			case ttl > 0 && now.Sub(m.Enqueued) > ttl:
				// upstream.timeToLiveSecs of its priority.
				r.Metrics.Dropped.WithLabelValues("ttl").Inc()
				r.ack(rank, m.Seq)
			case q.Pending(m.Seq):
				live = append(live, m)
			}
			// Otherwise the queue dropped it since it was read, and
			// counted it.
		}
		msgs = live
		if len(msgs) == 0 {
			return
		}
		f := flight{msgs: msgs, out: w.message(msgs), gen: gen}
		b := r.config.Load().Batching
		var p edgehub.Pending
		if len(msgs) > 1 && edgehub.Billed(f.out) > billedLimit(b.MaxBytes) {
			err = edgehub.ErrTooLarge // a batch compressed worse than estimated
		} else {
			if r.throttle(ctx, msgs[0].Output, f.out) != nil {
				return // ctx ended; still queued
			}
			p, err = r.hub.SendOn(gen, msgs[0].Output, f.out)
		}
		switch {
		case errors.Is(err, edgehub.ErrReconnected):
			continue
		case errors.Is(err, edgehub.ErrTooLarge):
			// edgeHub would drop it (docs/edge-protocol.md#limits). The
			// intake dead-letters such messages, but the output may have
			// changed since, or a batch compressed worse than estimated:
			// a batch goes again in halves, and one message alone too
			// large is dead-lettered, then leaves the queue.
			if len(msgs) > 1 {
				w.send(ctx, msgs[:len(msgs)/2])
				w.send(ctx, msgs[len(msgs)/2:])
				return
			}
			w.deadLetter(ctx, msgs[0], err)
			return
		case err != nil:
			return
		}
		f.pending = p
		w.inflight = append(w.inflight, f)
		return
	}
}

// deadLetter puts m in the dead-letter store and then acknowledges it in
// the queue. While the store refuses (full), it tries again with backoff,
// holding this worker's sources back, until ctx ends (m stays queued).
func (w *worker) deadLetter(ctx context.Context, m *queue.Message, cause error) {
	r := w.r
	b := r.retry
	for {
		err := r.deadLetter(m, deadletter.ReasonTooLarge, cause)
		if err == nil {
			r.ack(m.Rank, m.Seq)
			return
		}
		r.log.Warn().Err(err).Str("mid", m.ID).Msg("dead letter refused; holding the source back")
		if backoff.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

// connection waits for a connection later than number after and returns
// its number once the whole window is on it: what went out on an earlier
// connection goes out again first, in order, whatever became of it there,
// so that nothing new overtakes it.
func (w *worker) connection(ctx context.Context, after uint64) (uint64, error) {
	for {
		gen, err := w.r.hub.WaitConnected(ctx, after)
		if err != nil {
			return 0, err
		}
		if w.resend(ctx, gen) {
			return gen, nil
		}
		after = gen // gone already
	}
}

// resend publishes again on connection gen what the window sent on
// another; false when gen is gone meanwhile.
func (w *worker) resend(ctx context.Context, gen uint64) bool {
	r := w.r
	// It runs before every publish: most often the whole window is on
	// gen already.
	if !slices.ContainsFunc(w.inflight, func(f flight) bool { return f.gen != gen }) {
		return true
	}
	// What the queue dropped meanwhile stays dropped.
	w.inflight = slices.DeleteFunc(w.inflight, func(f flight) bool {
		q := r.lane(f.msgs[0].Rank).q
		return f.gen != gen && !slices.ContainsFunc(f.msgs, func(m *queue.Message) bool { return q.Pending(m.Seq) })
	})
	for i := range w.inflight {
		f := &w.inflight[i]
		if f.gen == gen {
			continue
		}
		if r.throttle(ctx, f.msgs[0].Output, f.out) != nil {
			return false // ctx ended
		}
		p, err := r.hub.SendOn(gen, f.msgs[0].Output, f.out)
		if err != nil {
			return false
		}
		f.pending, f.gen = p, gen
	}
	return true
}

// settle handles the head of the window once it is done, and every done
// one after it: acknowledged, they leave the queue (in one Ack per run
// of one rank); if the connection of one ended first, the window goes out
// again on the next connection.
func (w *worker) settle(ctx context.Context) {
	acked := w.acks[:0]
	sent, rank := 0, uint8(0)
	defer func() { w.ackAll(rank, acked, sent) }()
	for len(w.inflight) > 0 {
		head := w.inflight[0]
		select {
		case <-head.pending.Done():
		default:
			return
		}
		if head.pending.Err() != nil {
			w.ackAll(rank, acked, sent)
			acked, sent = acked[:0], 0
			_, _ = w.connection(ctx, head.gen) // an error is ctx ending: still queued
			return
		}
		w.inflight[0] = flight{}
		w.inflight = w.inflight[1:]
		if r := head.msgs[0].Rank; r != rank && sent > 0 {
			w.ackAll(rank, acked, sent)
			acked, sent = acked[:0], 0
		}
		rank = head.msgs[0].Rank
		sent++
		for _, m := range head.msgs {
			acked = append(acked, m.Seq)
		}
	}
}

// ackAll takes the messages of sent publishes of rank, acknowledged
// upstream, out of the queue.
func (w *worker) ackAll(rank uint8, seqs []uint64, sent int) {
	if sent == 0 {
		return
	}
	r := w.r
	r.Metrics.Sent.Add(float64(sent))
	r.Metrics.Acknowledged.Add(float64(len(seqs)))
	r.ack(rank, seqs...)
	w.acks = seqs[:0]
}

// ack acknowledges seqs in the queue of rank.
func (r *Relay) ack(rank uint8, seqs ...uint64) {
	if err := r.lane(rank).q.Ack(seqs...); err != nil {
		r.log.Warn().Err(err).Msg("acknowledge in the queue")
	}
}

// message builds what msgs go out as, gzipping a batch when batching
// asks for it, and learns the compression ratio from it.
func (w *worker) message(msgs []*queue.Message) *edgehub.Message {
	if len(msgs) == 1 || w.r.config.Load().Batching.Compression != "gzip" {
		return message(msgs, nil)
	}
	m := message(msgs, &w.gz)
	body := 1
	for _, x := range msgs {
		body += len(x.Body) + 1
	}
	w.pack.observe(body, len(m.Body))
	return m
}
