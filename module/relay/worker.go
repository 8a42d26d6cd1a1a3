package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
)

// worker publishes the messages of the sources sharded to it, in order,
// batching small JSON readings when the configuration asks for it.
type worker struct {
	r     *Relay
	in    chan *queue.Message
	flush chan chan int
}

func (w *worker) run(ctx context.Context) {
	var (
		pending []*queue.Message
		size    int
		linger  <-chan time.Time
	)
	send := func() {
		if len(pending) > 0 {
			w.send(ctx, pending)
		}
		pending, size, linger = nil, 0, nil
	}
	take := func(m *queue.Message) {
		b := w.r.config.Load().Batching
		if !b.Enabled || !json.Valid(m.Body) {
			send() // what came before goes first
			w.send(ctx, []*queue.Message{m})
			return
		}
		if len(pending) > 0 && (pending[0].Output != m.Output || size+len(m.Body)+1 > b.MaxBytes) {
			send()
		}
		pending = append(pending, m)
		size += len(m.Body) + 1
		switch {
		case len(pending) >= b.MaxMessages || size >= b.MaxBytes:
			send()
		case len(pending) == 1:
			linger = time.After(time.Duration(b.Linger))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
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
			done <- n
		}
	}
}

// send publishes msgs as one message (a batch when more than one) and
// acknowledges them in the queue once edgeHub has. It returns when that is
// done, or when ctx ends: then they stay queued.
func (w *worker) send(ctx context.Context, msgs []*queue.Message) {
	r := w.r
	now := r.now()
	live := msgs[:0:0]
	for _, m := range msgs {
		if !m.Expires.IsZero() && now.After(m.Expires) {
			r.Metrics.Dropped.WithLabelValues("expired").Inc()
			r.ack(m.Seq)
			continue
		}
		live = append(live, m)
	}
	if len(live) == 0 {
		return
	}
	out := message(live)
	err := r.hub.Publish(ctx, live[0].Output, out)
	switch {
	case errors.Is(err, edgehub.ErrTooLarge):
		// edgeHub would drop it anyway (edge-runtime.md §4.5).
		r.log.Warn().Str("mid", out.ID).Int("bytes", len(out.Body)).Msg("message over 256 KiB dropped")
		r.Metrics.Dropped.WithLabelValues("too_large").Add(float64(len(live)))
	case err != nil:
		return // ctx ended; the messages stay queued
	default:
		r.Metrics.Sent.Inc()
		r.Metrics.Acknowledged.Add(float64(len(live)))
	}
	seqs := make([]uint64, len(live))
	for i, m := range live {
		seqs[i] = m.Seq
	}
	r.ack(seqs...)
}

func (r *Relay) ack(seqs ...uint64) {
	if err := r.q.Ack(seqs...); err != nil {
		r.log.Warn().Err(err).Msg("acknowledge in the queue")
	}
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
	props := map[string]string{"batch-count": strconv.Itoa(len(msgs))}
	for k, v := range first.Properties {
		props[k] = v
	}
	return &edgehub.Message{
		ID: "batch-" + hex.EncodeToString(h.Sum(nil)[:16]), Body: body,
		ContentType: "application/json", ContentEncoding: "utf-8", Properties: props,
	}
}
