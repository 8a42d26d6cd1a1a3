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
)

// worker publishes the messages of the sources sharded to it, in order,
// with up to window publishes awaiting their PUBACK, batching small JSON
// readings when the configuration asks for it.
type worker struct {
	r        *Relay
	in       chan *queue.Message
	flush    chan chan int
	inflight []flight
	pack     packer
	gz       compressor
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
	var head *queue.Message // the batch's first member when linger was set
	// rearm points linger at the batch's deadline when its first member
	// changed.
	rearm := func() {
		b := w.r.config.Load().Batching
		d, ok := w.pack.deadline(b)
		switch {
		case !ok:
			linger, head = nil, nil
		case head != w.pack.msgs[0]:
			linger, head = time.After(time.Until(d)), w.pack.msgs[0]
		}
	}
	send := func() {
		if batch := w.pack.flush(w.r.config.Load().Batching); batch != nil {
			w.send(ctx, batch)
		}
		rearm()
	}
	take := func(m *queue.Message) {
		b := w.r.config.Load().Batching
		if !b.Enabled || !json.Valid(m.Body) {
			send() // what came before goes first
			w.send(ctx, []*queue.Message{m})
			return
		}
		for _, batch := range w.pack.add(m, b, time.Now()) {
			w.send(ctx, batch)
		}
		rearm()
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
		case m := <-w.in:
			take(m)
		case <-linger:
			send()
		case done := <-w.flush:
			// What has reached this worker counts as queued now.
			for drained := false; !drained; {
				select {
				case m := <-w.in:
					take(m)
				default:
					drained = true
				}
			}
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

// send starts publishing msgs as one message (a batch when more than one),
// waiting for room in the window first.
func (w *worker) send(ctx context.Context, msgs []*queue.Message) {
	r := w.r
	// twin.Config.InFlight: edgeHub stops reading a client at 100 pending
	// (docs/edge-protocol.md#edgehub-delivery), which slows it down but loses nothing.
	for len(w.inflight) >= r.config.Load().InFlight && ctx.Err() == nil {
		select {
		case <-w.inflight[0].pending.Done():
			w.settle(ctx)
		case <-ctx.Done():
		}
	}
	for {
		gen, err := w.connection(ctx, 0)
		if err != nil {
			return // ctx ended; still queued
		}
		// Checked once connected, so that what the queue dropped during
		// an outage is not sent, and the counts stay exact.
		now := r.now()
		live := msgs[:0:0]
		for _, m := range msgs {
			switch {
			case !m.Expires.IsZero() && now.After(m.Expires):
				r.Metrics.Dropped.WithLabelValues("expired").Inc()
				r.ack(m.Seq)
			case r.q.Pending(m.Seq):
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
			r.ack(m.Seq)
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
		if w.resend(gen) {
			return gen, nil
		}
		after = gen // gone already
	}
}

// resend publishes again on connection gen what the window sent on
// another; false when gen is gone meanwhile.
func (w *worker) resend(gen uint64) bool {
	r := w.r
	// What the queue dropped meanwhile stays dropped.
	w.inflight = slices.DeleteFunc(w.inflight, func(f flight) bool {
		return f.gen != gen && !slices.ContainsFunc(f.msgs, func(m *queue.Message) bool { return r.q.Pending(m.Seq) })
	})
	for i := range w.inflight {
		f := &w.inflight[i]
		if f.gen == gen {
			continue
		}
		p, err := r.hub.SendOn(gen, f.msgs[0].Output, f.out)
		if err != nil {
			return false
		}
		f.pending, f.gen = p, gen
	}
	return true
}

// settle handles the head of the window once it is done: acknowledged, it
// leaves the queue; if its connection ended first, the window goes out
// again on the next connection.
func (w *worker) settle(ctx context.Context) {
	r := w.r
	head := w.inflight[0]
	if head.pending.Err() == nil {
		w.inflight = w.inflight[1:]
		r.Metrics.Sent.Inc()
		r.Metrics.Acknowledged.Add(float64(len(head.msgs)))
		r.ack(seqs(head.msgs)...)
		return
	}
	_, _ = w.connection(ctx, head.gen) // an error is ctx ending: still queued
}

func seqs(msgs []*queue.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func (r *Relay) ack(seqs ...uint64) {
	if err := r.q.Ack(seqs...); err != nil {
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
