package hubemu

import (
	"bytes"
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hook drives mochi. Its OnPublish runs on the client's read goroutine
// before mochi writes the PUBACK, so a PUBACK always follows the message
// being recorded or queued (docs/edge-protocol.md#edgehub-delivery), and holding it there is
// back-pressure.
type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "edgehub" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketProcessed, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnWill:
		return true
	}
	return false
}

// OnConnect authenticates. Refusals send their own CONNACK and return an
// error, on which mochi closes the connection without another CONNACK
// (OnConnectAuthenticate could only produce return code 4, which edgeHub
// never sends).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	id, tok, ref := s.authenticate(cl, pk)
	if ref != nil {
		if ref.code == packets.ErrUnsupportedProtocolVersion {
			cl.Properties.ProtocolVersion = 4 // answer in 3.1.1 form
		}
		s.log.Info().Str("client", pk.Connect.ClientIdentifier).Str("reason", ref.reason).Msg("connect refused")
		_ = s.broker.SendConnack(cl, ref.code, false, nil)
		return ref.code
	}
	// Keep-alive as edgeHub: 0 or more than 400 s becomes 400 s, which
	// mochi turns into a 600 s read deadline.
	if k := cl.State.Keepalive; k == 0 || k > maxKeepAlive {
		cl.State.Keepalive = maxKeepAlive
	}
	c := newConn(s, id, cl, tok)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = s.broker.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		return packets.ErrServerUnavailable
	}
	old := s.conns[id]
	s.byClient[cl] = c
	s.mu.Unlock()
	// A second connection of an identity closes the first
	// (docs/edge-protocol.md#mqtt-to-edgehub). Closing it here, before mochi's session take-over, keeps mochi
	// from writing a DISCONNECT to it.
	if old != nil {
		old.close("replaced by a new connection of the same identity")
	}
	return nil
}

func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnSessionEstablish runs just before the CONNACK is written: from here
// the identity counts as connected, so a client that has its CONNACK sees
// Connected true.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	s := h.s
	s.mu.Lock()
	c := s.byClient[cl]
	if c == nil || c.closed() {
		s.mu.Unlock()
		return
	}
	old := s.conns[c.id]
	s.conns[c.id] = c
	s.mu.Unlock()
	if old != nil && old != c {
		old.close("replaced by a new connection of the same identity")
	}
}

// OnSessionEstablished runs after the CONNACK went out, before the first
// packet is read: the emulator may send PUBLISHes from now on.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	s := h.s
	c := s.connOf(cl)
	if c == nil {
		return
	}
	c.ready.Store(true)
	s.log.Info().Str("client", c.id.String()).Bool("clean", cl.Properties.Clean).Msg("connected")
	s.pokeInbox(c.id)
}

func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if c := h.s.connOf(cl); c != nil {
		h.s.unregister(c)
	}
}

// OnACLCheck allows subscriptions to the client's own topics only. Publish
// topics are checked in OnPublish: mochi answers a refused 3.1.1 publish
// with a DISCONNECT packet, which a 3.1.1 server cannot send.
func (h *hook) OnACLCheck(cl *mqtt.Client, filter string, write bool) bool {
	if write {
		return true
	}
	c := h.s.connOf(cl)
	return c != nil && c.id.maySubscribe(filter)
}

// OnSubscribe grants QoS 1 for QoS 2 (docs/edge-protocol.md#limits).
func (h *hook) OnSubscribe(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		pk.Filters[i].Qos = min(pk.Filters[i].Qos, 1)
	}
	return pk
}

// OnSubscribed lets queued input messages go to a module that just
// subscribed.
func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if c := h.s.connOf(cl); c != nil {
		h.s.pokeInbox(c.id)
	}
}

// OnPacketProcessed sees every PUBACK, including those for packet
// identifiers mochi does not know (all of the emulator's).
func (h *hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type != packets.Puback {
		return
	}
	if c := h.s.connOf(cl); c != nil {
		c.acked(pk.PacketID)
	}
}

// OnPublish consumes every client PUBLISH. It returns CodeSuccessIgnore,
// on which mochi acknowledges (QoS 1) without forwarding or retaining, or
// ErrRejectPacket after closing the connection, on which it sends nothing.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.s
	c := s.connOf(cl)
	if c == nil {
		cl.Stop(packets.ErrNotAuthorized)
		return pk, packets.ErrRejectPacket
	}
	s.stall(c)
	if c.closed() {
		return pk, packets.ErrRejectPacket
	}
	if !c.id.owns(pk.TopicName) {
		c.close("published to another identity's topic " + pk.TopicName)
		return pk, packets.ErrRejectPacket
	}
	if err := s.handlePublish(c, pk.TopicName, bytes.Clone(pk.Payload)); err != nil {
		c.close(err.Error())
		return pk, packets.ErrRejectPacket
	}
	// edgeHub processes a QoS 2 PUBLISH, then closes the connection
	// ("QoS 2 is not supported", docs/edge-protocol.md#limits).
	if pk.FixedHeader.Qos == 2 {
		c.close("QoS 2 publish")
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnWill routes a will on the client's telemetry topic like any message,
// then points mochi's copy at a topic no client can subscribe to, so that
// mochi delivers nothing itself.
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	s := h.s
	if c := s.connOf(cl); c != nil && c.id.owns(will.TopicName) {
		if t, err := parseTopic(will.TopicName); err == nil && t.kind == kindTelemetry {
			s.ingest(c.id, t, bytes.Clone(will.Payload))
		}
	}
	will.TopicName, will.Retain, will.Qos = "$hubemu/will", false, 0
	return will, nil
}

// handlePublish dispatches an inbound PUBLISH. An error closes the
// connection, as an exception in edgeHub's processing does.
func (s *Server) handlePublish(c *conn, topic string, payload []byte) error {
	t, err := parseTopic(topic)
	if err != nil {
		if errors.Is(err, errNoRID) {
			return err
		}
		// Bad property bag: no template conversion, dropped but acked.
		s.log.Info().Str("client", c.id.String()).Str("topic", topic).Err(err).Msg("message dropped: topic unusable")
		return nil
	}
	switch t.kind {
	case kindTelemetry:
		s.ingest(c.id, t, payload)
	case kindTwinGet:
		s.twinGet(c, t.rid)
	case kindTwinReported:
		s.twinReported(c, t.rid, payload)
	case kindMethodResponse:
		s.methodResponse(c.id, t.rid, t.status, payload)
	default:
		s.log.Info().Str("client", c.id.String()).Str("topic", topic).Msg("message dropped: no inbound template matches")
	}
	return nil
}
