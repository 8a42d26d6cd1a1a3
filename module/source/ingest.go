package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/module/deadletter"
	"github.com/edgetpm/edgetpm/module/edgehub"
	"github.com/edgetpm/edgetpm/module/queue"
	"github.com/edgetpm/edgetpm/module/twin"
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
			// broker's session: dead-lettered, so that it does not hold
			// the window and is not lost.
			if !s.warnedStray.Swap(true) {
				s.log.Warn().Str("topic", msg.Topic()).Msg("dead-lettering messages no configured filter matches (a subscription left by an earlier configuration)")
			}
			m := &queue.Message{Source: s.origin, Properties: map[string]string{PropTopic: msg.Topic()}, Body: msg.Payload()}
			if err := s.deadLetter(m, deadletter.ReasonUnrouted, nil); err != nil {
				s.setErr(fmt.Errorf("dead letter: %w", err))
				s.shed([]delivery{{msg: msg}})
				return // QoS 1: not acknowledged, sent again on the next connection
			}
			msg.Ack()
			return
		}
		d := delivery{cli: cli, msg: msg, topic: &s.cfg.Topics[t]}
		if !s.hand(ctx, cli, d) {
			s.shed([]delivery{d})
		}
	}
}

// hand gives d to the worker: it takes d's bytes of the inbox's bound,
// then a place in the inbox, waiting while either is full (paho's reader,
// held here, then reads nothing more, and the broker keeps the rest). It
// gives up when ctx ends or the connection is lost: a QoS 1 message is
// then not acknowledged, and the broker sends it again.
func (s *source) hand(ctx context.Context, cli mqtt.Client, d delivery) bool {
	d.cost = min(int64(len(d.msg.Payload())), s.room.max) // a larger one takes it all
	ok, freed := s.room.take(d.cost)
	if ok {
		select {
		case s.inbox <- d:
			return true
		default:
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ok {
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		case <-tick.C:
			if !cli.IsConnectionOpen() {
				return false
			}
		}
		ok, freed = s.room.take(d.cost)
	}
	for {
		select {
		case s.inbox <- d:
			return true
		case <-ctx.Done():
		case <-tick.C:
			if cli.IsConnectionOpen() {
				continue
			}
		}
		s.room.give(d.cost)
		return false
	}
}

// budget bounds the bytes a source holds between broker and queue.
type budget struct {
	max   int64
	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced when bytes are given back
}

func newBudget(max int64) *budget { return &budget{max: max, freed: make(chan struct{})} }

// take takes n bytes if they fit; otherwise it returns a channel closed
// when some are given back.
func (b *budget) take(n int64) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false, b.freed
	}
	b.used += n
	return true, nil
}

func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
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
		var cost int64
		for _, d := range batch {
			cost += d.cost
		}
		s.store(ctx, batch) // reorders batch
		s.room.give(cost)
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

	s.commit(ctx, batch, msgs, seqs)
}

// commit appends msgs (nil where batch[i] is only acknowledged) and then
// acknowledges batch, holding the acknowledgements and retrying while the
// queue refuses for a reason that can pass. A batch the queue can never
// take (queue.ErrTooLarge) is split; a single message it can never take
// is dead-lettered, and acknowledged once that is durable.
func (s *source) commit(ctx context.Context, batch []delivery, msgs []*queue.Message, seqs []uint64) {
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
		if errors.Is(err, queue.ErrTooLarge) {
			if len(fresh) > 1 {
				for i := range batch {
					s.commit(ctx, batch[i:i+1], msgs[i:i+1], seqs[i:i+1])
				}
				return
			}
			err = s.deadLetter(fresh[0], deadletter.ReasonQueueLimit, err)
			if err == nil {
				fresh = nil
			}
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
			s.shed(batch)
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
			s.shed(batch)
			return
		}
	}
}

// deadLetter puts m in the dead-letter store for reason (err says why)
// and returns nil once it is durable.
func (s *source) deadLetter(m *queue.Message, reason string, err error) error {
	if s.m.dead == nil {
		return fmt.Errorf("no dead-letter store for a message the queue refuses: %w", err)
	}
	if err := s.m.dead.Put(deadletter.Of(m, reason, err)); err != nil {
		return err
	}
	s.deadLettered.Add(1)
	s.log.Warn().Str("reason", reason).Str("mid", m.ID).Str("topic", m.Properties[PropTopic]).Int("bytes", len(m.Body)).Err(err).Msg("message dead-lettered")
	return nil
}

// shed counts the QoS 0 messages of batch as lost: at most once, and the
// broker will not send them again.
func (s *source) shed(batch []delivery) {
	for _, d := range batch {
		if d.msg.Qos() == 0 {
			s.shedCount.Add(1)
		}
	}
}

// message builds the queue message for a delivery. The properties of a
// topic seen before are the map built for it then, shared: nothing
// downstream changes a message's properties.
func (s *source) message(d delivery) *queue.Message {
	body := d.msg.Payload()
	out := d.topic.Output
	if out == "" {
		out = *s.m.output.Load()
	}
	m := &queue.Message{
		ID: edgehub.NewMessageID(), Source: s.origin, Enqueued: s.m.now(),
		Output: out, Properties: s.props.get(d.topic, d.msg.Topic(), d.msg.Retained()), Body: body, Rank: s.cfg.Rank(*d.topic),
	}
	if isJSON(body) {
		m.ContentType, m.ContentEncoding = "application/json", "utf-8"
	}
	return m
}

// isJSON tells whether body is one JSON value in UTF-8. Most readings that
// are not JSON are told by their first byte, before json.Valid scans them
// (and allocates its error).
func isJSON(body []byte) bool {
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	if i == len(body) || !strings.ContainsRune(`{["-0123456789tfn`, rune(body[i])) {
		return false
	}
	return utf8.Valid(body) && json.Valid(body)
}

// propCache holds the properties of the topics a source has seen lately,
// for the work goroutine only: topics and their properties rarely change,
// readings come by the thousand.
type propCache struct {
	topics map[propKey]map[string]string
}

type propKey struct {
	topic    *twin.Topic
	name     string
	retained bool
}

// maxCachedTopics bounds the cache; past it, it starts over.
const maxCachedTopics = 1024

// get returns the properties of a message on topic name, routed to topic.
func (c *propCache) get(topic *twin.Topic, name string, retained bool) map[string]string {
	k := propKey{topic, name, retained}
	if p, ok := c.topics[k]; ok {
		return p
	}
	props := make(map[string]string, len(topic.Properties)+2)
	maps.Copy(props, topic.Properties)
	props[PropTopic] = name
	delete(props, PropRetained) // ours, like PropTopic
	if retained {
		props[PropRetained] = "true"
	}
	if c.topics == nil || len(c.topics) >= maxCachedTopics {
		c.topics = map[propKey]map[string]string{}
	}
	c.topics[k] = props
	return props
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
