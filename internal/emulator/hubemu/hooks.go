package hubemu

import (
	"bytes"
	"errors"
	"strings"

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
		mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketProcessed, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnWill,
		mqtt.OnPacketRead:
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

// OnPacketRead sees every packet as it is read, before mochi's own checks
// (only ErrRejectPacket counts as an error, and ends the connection),
// for what mochi would refuse or drop in ways neither edgeHub nor MQTT
// 3.1.1 does:
//   - a CONNECT with a protocol level mochi does not know, such as 0x84
//     (3.1.1 with the bridge bit, Mosquitto's try_private), gets return
//     code 1, not mochi's 0x82, which 3.1.1 lacks [MQTT-3.1.2-2];
//   - a PUBLISH to a topic mochi drops without a hook or an
//     acknowledgement ($SYS/..., $share) is consumed here like any other,
//     so it is logged and, at QoS 1, acknowledged;
//   - a PUBLISH topic with a wildcard closes the connection
//     [MQTT-3.3.2-2], with the reason logged.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if unknownProtocolLevel(pk) {
			h.s.log.Info().Str("client", pk.Connect.ClientIdentifier).Int("level", int(pk.ProtocolVersion)).Msg("connect refused: protocol level")
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: 1})
			return pk, packets.ErrRejectPacket // mochi closes the connection
		}
	case packets.Publish:
		if mqtt.IsValidFilter(pk.TopicName, true) {
			return pk, nil // OnPublish takes it
		}
		c := h.s.connOf(cl)
		if strings.ContainsAny(pk.TopicName, "+#") {
			if c != nil {
				c.close("wildcard in the PUBLISH topic " + pk.TopicName)
			}
			return pk, packets.ErrRejectPacket // mochi ends the connection
		}
		if h.consume(cl, pk) == nil && pk.FixedHeader.Qos == 1 {
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		// mochi now drops it, having nothing more to do.
	}
	return pk, nil
}

// unknownProtocolLevel reports a CONNECT whose protocol name mochi knows
// with a level it does not: ConnectValidate would refuse it with 0x82.
func unknownProtocolLevel(pk packets.Packet) bool {
	switch string(pk.Connect.ProtocolName) {
	case "MQTT":
		return pk.ProtocolVersion != 4 && pk.ProtocolVersion != 5
	case "MQIsdp":
		return pk.ProtocolVersion != 3
	}
	return false
}

// OnPublish consumes every client PUBLISH. It returns CodeSuccessIgnore,
// on which mochi acknowledges (QoS 1) without forwarding or retaining, or
// ErrRejectPacket after closing the connection, on which it sends nothing.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if err := h.consume(cl, pk); err != nil {
		return pk, err
	}
	return pk, packets.CodeSuccessIgnore
}

// consume handles a client PUBLISH. nil means acknowledge it (QoS 1); an
// error that the connection is closed and nothing is to be sent.
func (h *hook) consume(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	c := s.connOf(cl)
	if c == nil {
		cl.Stop(packets.ErrNotAuthorized)
		return packets.ErrRejectPacket
	}
	s.stall(c)
	if c.closed() {
		return packets.ErrRejectPacket
	}
	if !c.id.owns(pk.TopicName) {
		c.close("published to another identity's topic " + pk.TopicName)
		return packets.ErrRejectPacket
	}
	if err := s.handlePublish(c, pk.TopicName, bytes.Clone(pk.Payload), pk.FixedHeader.Retain); err != nil {
		c.close(err.Error())
		return packets.ErrRejectPacket
	}
	// edgeHub processes a QoS 2 PUBLISH, then closes the connection
	// ("QoS 2 is not supported", docs/edge-protocol.md#limits).
	if pk.FixedHeader.Qos == 2 {
		c.close("QoS 2 publish")
		return packets.ErrRejectPacket
	}
	return nil
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
func (s *Server) handlePublish(c *conn, topic string, payload []byte, retain bool) error {
	t, err := parseTopic(topic)
	if err != nil {
		if errors.Is(err, errNoRID) || errors.Is(err, errEventsLevels) {
			return err
		}
		// Bad property bag: no template conversion, dropped but acked.
		s.log.Info().Str("client", c.id.String()).Str("topic", topic).Err(err).Msg("message dropped: topic unusable")
		return nil
	}
	switch t.kind {
	case kindTelemetry:
		if retain {
			// IoT Hub keeps no retained message; it passes the flag on
			// as an application property (docs/edge-protocol.md#limits).
			t.props[propRetain] = "true"
		}
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
