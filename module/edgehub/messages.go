package edgehub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// MaxMessageSize is edgeHub's limit on a message: body plus every
// property key and value, and on a PUBLISH packet's remaining length
// (docs/edge-protocol.md#limits). See Session.Size.
const MaxMessageSize = 256 * 1024

// ErrTooLarge is a message over MaxMessageSize; edgeHub would drop it.
var ErrTooLarge = errors.New("message over 256 KiB with its properties")

// Message is telemetry sent to an output or received on an input.
type Message struct {
	Body []byte
	// ID is $.mid: stable across re-sends, so duplicates can be dropped.
	ID              string
	CorrelationID   string
	ContentType     string
	ContentEncoding string
	// Properties are the application properties.
	Properties map[string]string
	// From is the sender's "device/module" ($.cdid/$.cmid) on inputs.
	From string
	// Expiry is $.exp: after it the message is stale. Zero is never.
	Expiry time.Time
}

// NewMessageID returns a random message ID.
func NewMessageID() string {
	var b [16]byte
	var h [32]byte
	rand.Read(b[:])
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// systemProps are m's system properties sent to output, in the order
// they are written; empty ones are not sent.
func (m *Message) systemProps(output string) [len(systemOrder)]prop {
	var exp string
	if !m.Expiry.IsZero() {
		exp = m.Expiry.UTC().Format(time.RFC3339Nano)
	}
	return [...]prop{{PropOutput, output}, {PropMessageID, m.ID}, {PropCorrelationID, m.CorrelationID},
		{PropContentType, m.ContentType}, {PropContentEncoding, m.ContentEncoding}, {PropExpiry, exp}}
}

// Publish sends m to output (ignored for a device identity) at QoS 1 and returns once
// it is acknowledged. A connection that drops before the PUBACK is waited
// out and the message sent again, with the same ID, until ctx ends.
func (s *Session) Publish(ctx context.Context, output string, m *Message) error {
	for {
		p, err := s.Send(ctx, output, m)
		if err != nil {
			return err
		}
		select {
		case <-p.Done():
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if p.Err() == nil {
			return nil
		}
		s.cfg.Log.Debug().Err(p.Err()).Str("mid", m.ID).Msg("publish interrupted; sending again once connected")
		// Let the session notice the loss before asking again.
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Pending is a publish awaiting its PUBACK.
type Pending struct{ tok mqtt.Token }

// failed is the token of a publish that could not start.
type failed struct{ err error }

func (f failed) Wait() bool                     { return true }
func (f failed) WaitTimeout(time.Duration) bool { return true }
func (f failed) Done() <-chan struct{}          { return closed }
func (f failed) Error() error                   { return f.err }

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Settled is a Pending already done: acknowledged when err is nil, lost
// with its connection otherwise. It is for stand-ins of the Session.
func Settled(err error) Pending { return Pending{failed{err}} }

// Done is closed when the PUBACK came or the connection ended first.
func (p Pending) Done() <-chan struct{} { return p.tok.Done() }

// Err is nil once acknowledged; an error means the connection ended first
// and the message must be sent again (with the same ID).
func (p Pending) Err() error { return p.tok.Error() }

// Send starts a QoS 1 publish of m to output once connected and returns
// without waiting for the PUBACK, so a window of messages can be in
// flight. See SendOn for keeping order across connections.
func (s *Session) Send(ctx context.Context, output string, m *Message) (Pending, error) {
	for {
		gen, err := s.WaitConnected(ctx, 0)
		if err != nil {
			return Pending{}, err
		}
		p, err := s.SendOn(gen, output, m)
		if !errors.Is(err, ErrReconnected) {
			return p, err
		}
	}
}

// ErrReconnected is SendOn's answer when its connection is gone.
var ErrReconnected = errors.New("not the current connection")

// SendOn starts a QoS 1 publish of m to output on connection number gen
// (from WaitConnected), or returns ErrReconnected if that is not the
// current connection. One connection delivers in the order sent, and
// edgeHub processes one connection's PUBLISHes in order
// (docs/edge-protocol.md#edgehub-delivery); after a lost connection, the unacknowledged ones are sent again in
// order on the next one, before anything new: SendOn keeps a publish from
// going out on another connection than the caller's window, which would
// put it ahead of those.
func (s *Session) SendOn(gen uint64, output string, m *Message) (Pending, error) {
	if m.ID == "" {
		m.ID = NewMessageID()
	}
	topic, size := s.encode(output, m)
	if size > MaxMessageSize {
		return Pending{}, ErrTooLarge
	}
	s.mu.Lock()
	cli, cur := s.cli, s.gen
	s.mu.Unlock()
	if cli == nil || cur != gen {
		return Pending{}, ErrReconnected
	}
	if !cli.IsConnectionOpen() {
		// Lost, and not yet replaced: a publish now would wait for the
		// write timeout. It fails at once, to be sent again.
		return Pending{failed{errors.New("connection lost")}}, nil
	}
	return Pending{cli.Publish(topic, 1, false, m.Body)}, nil
}

// Size is what m sent to output counts against edgeHub's limits, which
// it must not exceed (MaxMessageSize): the larger of the routing size
// (body plus every system and application property key and value) and
// the PUBLISH packet's remaining length (topic with its property bag,
// packet ID, body), the one that closes the connection when exceeded.
// m.ID counts as it is (SendOn gives a message without one 32 digits).
// Size is linear in the body's length.
func (s *Session) Size(output string, m *Message) int {
	_, n := s.encode(output, m)
	return n
}

// Fits reports whether m sent to output is within edgeHub's limits:
// Size(output, m) <= MaxMessageSize. A message far under them, as a
// reading is, is told without encoding it: escaping at most triples a
// property's bytes, and a property adds at most "=" and "&".
func (s *Session) Fits(output string, m *Message) bool {
	// System property keys are a few characters; $.exp's value is at
	// most 35 (RFC 3339 with nanoseconds).
	const systemOverhead = 6*(8+2) + 35
	props := systemOverhead + len(output) + len(m.ID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	for k, v := range m.Properties {
		props += len(k) + len(v) + 2
	}
	if len(s.events)+3*props+4+len(m.Body) <= MaxMessageSize {
		return true
	}
	return s.Size(output, m) <= MaxMessageSize
}

// encode returns the telemetry topic of m sent to output and its Size.
func (s *Session) encode(output string, m *Message) (string, int) {
	if s.cfg.Identity.ModuleID == "" {
		// $.on is an edgeHub route's source; IoT Hub has no outputs, and
		// a device's property would be billed for nothing.
		output = ""
	}
	sys := m.systemProps(output)
	b, props := appendBag(append(make([]byte, 0, len(s.events)+160), s.events...), sys[:], m.Properties)
	topic := string(b)
	routing := len(m.Body) + props
	packet := 2 + len(topic) + 2 + len(m.Body) // topic length, topic, packet ID, payload
	return topic, max(routing, packet)
}

// handler handles one message on the ctx of Run.
type handler func(ctx context.Context, c mqtt.Client, msg mqtt.Message)

// subscribe makes this connection's subscriptions: inputs (modules only),
// twin responses and desired patches, and methods. Their handlers get
// ctx, Run's, so that they end with the session.
func (s *Session) subscribe(ctx context.Context, cli mqtt.Client) error {
	filters := map[string]handler{
		"$iothub/twin/res/#":                      s.onTwinResponse,
		"$iothub/twin/PATCH/properties/desired/#": s.onDesired,
		"$iothub/methods/POST/#":                  s.onMethod,
	}
	if s.cfg.Identity.ModuleID != "" {
		filters[s.cfg.Identity.prefix()+"/inputs/#"] = s.onInput
	}
	qos := map[string]byte{}
	for f := range filters {
		qos[f] = 1
	}
	if err := wait(ctx, cli.SubscribeMultiple(qos, func(c mqtt.Client, msg mqtt.Message) {
		for f, h := range filters {
			if match(f, msg.Topic()) {
				// Not acknowledged when the session is ending: an input
				// comes again on the next connection.
				s.handle(func() { h(ctx, c, msg) })
				return
			}
		}
		msg.Ack()
	})); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// match reports whether topic falls under a filter ending in "/#".
func match(filter, topic string) bool {
	return strings.HasPrefix(topic, strings.TrimSuffix(filter, "#"))
}

// onInput parses devices/{d}/modules/{m}/inputs/{input}/{props} and acks
// once the handler has taken the message.
func (s *Session) onInput(ctx context.Context, _ mqtt.Client, msg mqtt.Message) {
	input, m, err := s.parseInput(msg.Topic(), msg.Payload())
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("topic", msg.Topic()).Msg("dropping an input message")
		msg.Ack()
		return
	}
	if s.cfg.Input == nil {
		msg.Ack()
		return
	}
	if err := s.cfg.Input(ctx, input, m); err != nil {
		// No PUBACK: edgeHub redelivers after its ack timeout (docs/edge-protocol.md#edgehub-delivery).
		s.cfg.Log.Warn().Err(err).Str("input", input).Str("mid", m.ID).Msg("input not taken")
		return
	}
	msg.Ack()
}

// ParseInputTopic splits an input topic into the input name and the
// message's properties.
func (s *Session) parseInput(topic string, body []byte) (string, *Message, error) {
	rest, ok := strings.CutPrefix(topic, s.cfg.Identity.prefix()+"/inputs/")
	if !ok {
		return "", nil, fmt.Errorf("not an input topic")
	}
	name, bag, _ := strings.Cut(rest, "/")
	input, err := url.PathUnescape(name)
	if err != nil || input == "" {
		return "", nil, fmt.Errorf("input name %q", name)
	}
	sys, app, err := ParseProperties(bag)
	if err != nil {
		return "", nil, err
	}
	m := &Message{
		Body: body, ID: sys[PropMessageID], CorrelationID: sys[PropCorrelationID],
		ContentType: sys[PropContentType], ContentEncoding: sys[PropContentEncoding], Properties: app,
	}
	if exp := sys[PropExpiry]; exp != "" {
		// An unreadable $.exp is not a reason to lose the message.
		m.Expiry, _ = time.Parse(time.RFC3339Nano, exp)
	}
	if d := sys[PropConnDevice]; d != "" {
		m.From = d
		if mod := sys[PropConnModule]; mod != "" {
			m.From += "/" + mod
		}
	}
	return input, m, nil
}

// onMethod answers $iothub/methods/POST/{name}/?$rid={rid}.
func (s *Session) onMethod(ctx context.Context, c mqtt.Client, msg mqtt.Message) {
	msg.Ack()
	name, rid, err := parseMethodTopic(msg.Topic())
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("topic", msg.Topic()).Msg("dropping a method request")
		return
	}
	status, resp := 404, []byte(`{"message":"no such method"}`)
	if s.cfg.Method != nil {
		status, resp = s.cfg.Method(ctx, name, msg.Payload())
	}
	c.Publish(methodResponseTopic(status, rid), 0, false, resp)
}

// queryValue reads key from a "?a=b&c=d" query without decoding "+".
func queryValue(query, key string) string {
	query = strings.TrimPrefix(query, "?")
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := url.PathUnescape(k); err == nil && dk == key {
			dv, _ := url.PathUnescape(v)
			return dv
		}
	}
	return ""
}
