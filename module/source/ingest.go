package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
)

// Application properties every relayed message carries.
const (
	// PropTopic is the MQTT topic the message was published on.
	PropTopic = "mqtt-topic"
	// PropRetained is "true" on a retained message the broker sent because
	// we subscribed: a last known value, possibly relayed before.
	PropRetained = "mqtt-retained"
)

// handler is paho's handler for every message of one connection. With
// OrderMatters paho calls it on its reader's goroutine, one message at a
// time, and nothing else is read (not even a PINGRESP) until it returns:
// it only hands the message to the worker. When the worker is behind, it
// waits, but never past the end of ctx or of the connection, because
// paho's disconnect waits for it.
func (s *source) handler(ctx context.Context) mqtt.MessageHandler {
	return func(cli mqtt.Client, msg mqtt.Message) {
		s.received.Add(1)
		t := s.route(msg.Topic())
		if t < 0 {
			// A subscription of an earlier configuration, kept in the
			// broker's session: acknowledged so it does not hold the
			// window, and dropped.
			if !s.warnedStray.Swap(true) {
				s.log.Warn().Str("topic", msg.Topic()).Msg("dropping messages no configured filter matches (a subscription left by an earlier configuration)")
			}
			msg.Ack()
			return
		}
		d := delivery{cli: cli, msg: msg, topic: &s.cfg.Topics[t]}
		select {
		case s.inbox <- d:
			return
		case <-ctx.Done():
			return
		default:
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case s.inbox <- d:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if !cli.IsConnectionOpen() {
					return // not acknowledged: the broker sends it again
				}
			}
		}
	}
}

// route returns the index of the first configured topic whose filter
// matches topic, or -1.
func (s *source) route(topic string) int {
	for i, t := range s.cfg.Topics {
		if match(t.Filter, topic) {
			return i
		}
	}
	return -1
}

// work appends what the handler hands over, in order and in batches,
// until ctx ends.
func (s *source) work(ctx context.Context) {
	for {
		var batch []delivery
		select {
		case d := <-s.inbox:
			batch = append(batch, d)
		case <-ctx.Done():
			return
		}
		size := len(batch[0].msg.Payload())
	more:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case d := <-s.inbox:
				batch = append(batch, d)
				size += len(d.msg.Payload())
			default:
				break more
			}
		}
		s.store(ctx, batch)
	}
}

// store appends a batch and then acknowledges it. While the queue refuses,
// it holds the acknowledgements and tries again with backoff, until the
// queue takes the batch or ctx ends (then the broker sends the QoS 1
// messages again on the next connection). A redelivery is recognized
// (see recent): known to be queued, it is only acknowledged; otherwise it
// is queued under the $.mid it had.
func (s *source) store(ctx context.Context, batch []delivery) {
	// msgs[i] is batch[i]'s queue message, nil when only acknowledged;
	// seqs[i] its entry in recent, 0 for none.
	msgs := make([]*queue.Message, len(batch))
	var ids []uint16
	var sums []digest
	var mids []string
	var staged []int // indexes of the QoS 1 messages to stage
	for i, d := range batch {
		msgs[i] = s.message(d)
		if d.msg.Qos() == 0 {
			continue
		}
		sum := digestOf(d.msg.Topic(), d.msg.Payload())
		if d.msg.Duplicate() {
			if mid, queued, ok := s.recent.lookup(d.msg.MessageID(), sum); ok {
				if queued {
					s.duplicates.Add(1)
					msgs[i] = nil
					continue
				}
				msgs[i].ID = mid // taken before a crash, perhaps not queued
			}
		}
		ids, sums, mids = append(ids, d.msg.MessageID()), append(sums, sum), append(mids, msgs[i].ID)
		staged = append(staged, i)
	}
	seqs := make([]uint64, len(batch))
	got, err := s.recent.stage(ids, sums, mids)
	s.recentErr(err)
	for j, i := range staged {
		seqs[i] = got[j]
	}

	b := s.m.appendRetry
	failing := false
	for {
		// A QoS 1 message whose connection has gone will come again on
		// the next: queued now, it would be queued twice.
		n := 0
		for i, d := range batch {
			if d.msg.Qos() == 0 || d.cli.IsConnectionOpen() {
				batch[n], msgs[n], seqs[n] = d, msgs[i], seqs[i]
				n++
			}
		}
		batch, msgs, seqs = batch[:n], msgs[:n], seqs[:n]
		if n == 0 {
			return
		}
		var err error
		fresh := nonNil(msgs)
		if len(fresh) > 0 {
			err = s.m.q.Append(ctx, fresh...)
		}
		if err == nil {
			s.queued.Add(int64(len(fresh)))
			s.recentErr(s.recent.queued(seqs))
			for _, d := range batch {
				d.msg.Ack()
			}
			if failing {
				s.log.Info().Msg("the queue takes messages again")
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		full := errors.Is(err, queue.ErrFull)
		if full {
			s.backpressured.Add(1)
		}
		s.setErr(fmt.Errorf("queue: %w", err))
		if !failing {
			failing = true
			if full {
				s.log.Warn().Msg("queue full: holding acknowledgements")
			} else {
				s.log.Error().Err(err).Msg("queue: holding acknowledgements")
			}
		}
		if backoff.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

// message builds the queue message for a delivery.
func (s *source) message(d delivery) *queue.Message {
	body := d.msg.Payload()
	props := make(map[string]string, len(d.topic.Properties)+2)
	maps.Copy(props, d.topic.Properties)
	props[PropTopic] = d.msg.Topic()
	delete(props, PropRetained) // ours, like PropTopic
	if d.msg.Retained() {
		props[PropRetained] = "true"
	}
	out := d.topic.Output
	if out == "" {
		out = *s.m.output.Load()
	}
	m := &queue.Message{
		ID: edgehub.NewMessageID(), Source: "mqtt:" + s.cfg.Name, Enqueued: s.m.now(),
		Output: out, Properties: props, Body: body,
	}
	if utf8.Valid(body) && json.Valid(body) {
		m.ContentType, m.ContentEncoding = "application/json", "utf-8"
	}
	return m
}

// recentErr warns, once, that recent could not be written.
func (s *source) recentErr(err error) {
	if err != nil && !s.warnedRecent.Swap(true) {
		s.log.Warn().Err(err).Msg("recording recent messages: a redelivery after a restart may be queued twice")
	}
}

func nonNil(msgs []*queue.Message) []*queue.Message {
	out := make([]*queue.Message, 0, len(msgs))
	for _, m := range msgs {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}
