package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
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
	acks     []uint64 // settle's buffer
}

// flight is a publish awaiting its PUBACK.
type flight struct {
	msgs    []*queue.Message
	out     *edgehub.Message
	pending edgehub.Pending
	gen     uint64 // the connection it went out on
}

func (w *worker) run(ctx context.Context) {
	var (
		pending []*queue.Message
		body    int // the batch's body: the members, commas and brackets
		linger  <-chan time.Time
	)
	send := func() {
		if len(pending) > 0 {
			w.send(ctx, pending)
		}
		pending, body, linger = nil, 0, nil
	}
	take := func(m *queue.Message) {
		b := w.r.config.Load().Batching
		if !b.Enabled || !json.Valid(m.Body) {
			send() // what came before goes first
			w.send(ctx, []*queue.Message{m})
			return
		}
		// batching.maxBytes bounds the batch as edgeHub counts it.
		if len(pending) > 0 && (pending[0].Output != m.Output || w.batchSize(pending[0], len(pending)+1, body+1+len(m.Body)) > b.MaxBytes) {
			send()
		}
		if len(pending) == 0 {
			body = 2 + len(m.Body)
		} else {
			body += 1 + len(m.Body)
		}
		pending = append(pending, m)
		switch {
		case len(pending) >= b.MaxMessages || w.batchSize(pending[0], len(pending), body) >= b.MaxBytes:
			send()
		case len(pending) == 1:
			linger = time.After(time.Duration(b.Linger))
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
			n := len(pending)
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
		f := flight{msgs: msgs, out: message(msgs), gen: gen}
		p, err := r.hub.SendOn(gen, msgs[0].Output, f.out)
		switch {
		case errors.Is(err, edgehub.ErrReconnected):
			continue
		case errors.Is(err, edgehub.ErrTooLarge):
			// edgeHub would drop it (docs/edge-protocol.md#limits). The
			// intake dead-letters such messages, but the output may have
			// changed since: members go one at a time, and one alone
			// too large is dead-lettered, then leaves the queue.
			if len(msgs) > 1 {
				for _, m := range msgs {
					w.send(ctx, []*queue.Message{m})
				}
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

// settle handles the head of the window once it is done, and every done
// one after it: acknowledged, they leave the queue (in one Ack); if the
// connection of one ended first, the window goes out again on the next
// connection.
func (w *worker) settle(ctx context.Context) {
	acked := w.acks[:0]
	sent := 0
	for len(w.inflight) > 0 {
		head := w.inflight[0]
		select {
		case <-head.pending.Done():
		default:
			w.ackAll(acked, sent)
			return
		}
		if head.pending.Err() != nil {
			w.ackAll(acked, sent)
			_, _ = w.connection(ctx, head.gen) // an error is ctx ending: still queued
			return
		}
		w.inflight[0] = flight{}
		w.inflight = w.inflight[1:]
		sent++
		for _, m := range head.msgs {
			acked = append(acked, m.Seq)
		}
	}
	w.ackAll(acked, sent)
}

// ackAll takes the messages of sent publishes, acknowledged upstream, out
// of the queue.
func (w *worker) ackAll(seqs []uint64, sent int) {
	if sent == 0 {
		return
	}
	r := w.r
	r.Metrics.Sent.Add(float64(sent))
	r.Metrics.Acknowledged.Add(float64(len(seqs)))
	r.ack(seqs...)
	w.acks = seqs[:0]
}

func (r *Relay) ack(seqs ...uint64) {
	if err := r.q.Ack(seqs...); err != nil {
		r.log.Warn().Err(err).Msg("acknowledge in the queue")
	}
}

// batchSize is what a batch of n messages, the first being first, with
// bodies of body bytes in all (brackets and commas included), counts
// against edgeHub's limits: measured by the session's own encoding.
func (w *worker) batchSize(first *queue.Message, n, body int) int {
	return w.r.hub.Size(first.Output, batchHeader(first, n, "")) + body
}

// batchHeader is a batch of n messages without its body: ID (38
// characters, "batch-" and 32 hex digits, a placeholder when id is
// empty), content type and properties.
func batchHeader(first *queue.Message, n int, id string) *edgehub.Message {
	if id == "" {
		id = "batch-" + strings.Repeat("0", 32)
	}
	props := map[string]string{"batch-count": strconv.Itoa(n)}
	for k, v := range first.Properties {
		props[k] = v
	}
	return &edgehub.Message{ID: id, ContentType: "application/json", ContentEncoding: "utf-8", Properties: props}
}

// message turns queued messages into what is published: itself for one, a
// JSON array of the bodies for a batch, with an ID derived from the
// members' so a re-sent batch of the same messages carries the same $.mid.
func message(msgs []*queue.Message) *edgehub.Message {
	first := msgs[0]
	if len(msgs) == 1 {
		return &edgehub.Message{ID: first.ID, Body: first.Body, ContentType: first.ContentType, ContentEncoding: first.ContentEncoding, Properties: first.Properties}
	}
	h := sha256.New()
	body := []byte{'['}
	for i, m := range msgs {
		h.Write([]byte(m.ID))
		h.Write([]byte{0})
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, m.Body...)
	}
	body = append(body, ']')
	out := batchHeader(first, len(msgs), "batch-"+hex.EncodeToString(h.Sum(nil)[:16]))
	out.Body = body
	return out
}
