package hubemu

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/internal/backoff"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// inbox is the queue of one module's input messages, drained by one worker
// goroutine: one message in flight per module (docs/edge-protocol.md#edgehub-delivery).
type inbox struct {
	id   identity
	q    []queued // under Server.mu
	wake chan struct{}
	run  bool // under Server.mu: worker started
}

type queued struct {
	input string
	msg   Message
}

// poke wakes the worker without blocking.
func (b *inbox) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (s *Server) pokeInbox(id identity) {
	s.mu.Lock()
	b := s.inboxes[id]
	s.mu.Unlock()
	if b != nil {
		b.poke()
	}
}

// SendToInput queues m for a module input as if a route had put it there.
// It is delivered when the module is connected and subscribed, like routed
// messages.
func (s *Server) SendToInput(ctx context.Context, device, module, input string, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if input == "" || strings.Contains(input, "/") {
		return fmt.Errorf("send to input %q of %s/%s: %w", input, device, module, ErrInvalidArgument)
	}
	if module == "" || !s.exists(identity{device, module}) {
		return fmt.Errorf("send to input %q of %s/%s: %w", input, device, module, ErrUnknownIdentity)
	}
	m = m.clone()
	if m.Received.IsZero() {
		m.Received = s.now()
	}
	s.enqueue(identity{device, module}, input, m)
	return nil
}

// enqueue appends to a module's inbox, starting its worker when serving.
func (s *Server) enqueue(id identity, input string, m Message) {
	s.mu.Lock()
	b := s.inboxes[id]
	if b == nil {
		b = &inbox{id: id, wake: make(chan struct{}, 1)}
		s.inboxes[id] = b
	}
	b.q = append(b.q, queued{input: input, msg: m})
	s.startInboxLocked(b)
	s.mu.Unlock()
	b.poke()
}

func (s *Server) startInboxLocked(b *inbox) {
	if b.run || s.stopped || !s.serving.Load() {
		return
	}
	b.run = true
	s.spawnLocked(func() { s.drain(b) })
}

// head returns the oldest message of b that has not expired, dropping the
// expired ones (store-and-forward TTL, docs/edge-protocol.md#edgehub-delivery).
func (s *Server) head(b *inbox) (queued, time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(b.q) > 0 {
		left := b.q[0].msg.Received.Add(s.ttl).Sub(s.now())
		if left > 0 {
			return b.q[0], left, true
		}
		s.log.Info().Str("module", b.id.String()).Str("input", b.q[0].input).Msg("input message expired")
		b.q = b.q[1:]
	}
	return queued{}, 0, false
}

func (s *Server) pop(b *inbox) {
	s.mu.Lock()
	b.q = b.q[1:]
	s.mu.Unlock()
}

// drain delivers b's messages in order until the server stops: to a ready
// connection subscribed to its module messages, waiting for the PUBACK up
// to the acknowledgement timeout, retrying with backoff (1 s..60 s) after a
// timeout or a lost connection, until the message's TTL
// (docs/edge-protocol.md#edgehub-delivery; ModuleEndpoint, RoutingModule EndpointExecutorConfig).
func (s *Server) drain(b *inbox) {
	retry := backoff.Backoff{Base: time.Second, Max: time.Minute}
	// wait sleeps for d, waking early on a poke; false when stopping.
	wait := func(d time.Duration, pokes bool) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		wake := b.wake
		if !pokes {
			wake = nil
		}
		select {
		case <-t.C:
		case <-wake:
		case <-s.stopping:
			return false
		}
		return true
	}
	for {
		q, left, ok := s.head(b)
		if !ok {
			select {
			case <-b.wake:
				continue
			case <-s.stopping:
				return
			}
		}
		topic := b.id.prefix() + "inputs/" + sas.Escape(q.input) + "/"
		system := make(map[string]string, len(q.msg.System))
		for k, v := range q.msg.System {
			if k != "$.on" { // not forwarded (OutgoingSystemPropertiesMap)
				system[k] = v
			}
		}
		topic += encodeProperties(system, q.msg.Properties)

		c := s.connected(b.id)
		var qos byte
		if c != nil {
			// edgeHub recognizes ^devices/.+/modules/.+/#$ as the
			// module-messages subscription (docs/edge-protocol.md#telemetry-topics-and-properties).
			qos, ok = c.subscription(topic, moduleMessagesFilter.MatchString)
		}
		if c == nil || !ok {
			// Stay queued; re-check at least each second for the TTL, as
			// Config.Now may jump.
			if !wait(min(left, time.Second), true) {
				return
			}
			continue
		}
		pid, acked, err := c.publish(topic, q.msg.Body, qos, qos > 0)
		if err == nil && qos == 0 {
			// QoS 0 subscription: complete once written (at-most-once).
			s.pop(b)
			retry.Reset()
			continue
		}
		if err == nil {
			t := time.NewTimer(s.ackTimeout)
			select {
			case <-acked:
				t.Stop()
				s.pop(b)
				retry.Reset()
				continue
			case <-t.C:
				err = fmt.Errorf("no PUBACK within %s", s.ackTimeout)
			case <-c.done:
				err = fmt.Errorf("connection closed")
			case <-s.stopping:
				t.Stop()
				return
			}
			c.untrack(pid)
		}
		d := retry.Next()
		s.log.Info().Str("module", b.id.String()).Str("input", q.input).Err(err).Dur("retry_in", d).Msg("input delivery failed")
		if !wait(d, false) {
			return
		}
	}
}
