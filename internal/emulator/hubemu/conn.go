package hubemu

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// conn is an authenticated MQTT connection. Everything the emulator sends
// goes through publish, with packet identifiers it allocates itself, so
// that the PUBACK of a delivery can be told apart (mochi's own in-flight
// store is never used for outbound messages).
type conn struct {
	s       *Server
	id      identity
	cl      *mqtt.Client
	netConn net.Conn
	token   *sas.Token

	ready     atomic.Bool   // CONNACK sent; may receive PUBLISHes
	done      chan struct{} // closed by close
	closeOnce sync.Once

	mu     sync.Mutex
	lastID uint16
	acks   map[uint16]chan struct{}
}

func newConn(s *Server, id identity, cl *mqtt.Client, tok *sas.Token) *conn {
	return &conn{s: s, id: id, cl: cl, netConn: cl.Net.Conn, token: tok, done: make(chan struct{}), acks: map[uint16]chan struct{}{}}
}

// close closes the network connection without a DISCONNECT packet, which
// MQTT 3.1.1 servers do not send; mochi then runs its disconnect path.
func (c *conn) close(reason string) {
	c.closeOnce.Do(func() {
		close(c.done)
		// Logged first: a client that sees the connection end finds why.
		c.s.log.Info().Str("client", c.id.String()).Str("reason", reason).Msg("connection closed")
		c.cl.Stop(errors.New(reason))
	})
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return c.cl.Closed()
	}
}

// publish writes a PUBLISH at qos. With track, the returned channel is
// closed when the client acknowledges it.
func (c *conn) publish(topic string, payload []byte, qos byte, track bool) (uint16, <-chan struct{}, error) {
	var pid uint16
	var ch chan struct{}
	if qos > 0 {
		c.mu.Lock()
		for {
			c.lastID++
			if _, used := c.acks[c.lastID]; c.lastID != 0 && !used {
				break
			}
		}
		pid = c.lastID
		if track {
			ch = make(chan struct{})
			c.acks[pid] = ch
		}
		c.mu.Unlock()
	}
	err := c.cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    pid,
	})
	if err != nil && track {
		c.untrack(pid)
		return 0, nil, err
	}
	return pid, ch, err
}

// acked is called for every PUBACK the client sends.
func (c *conn) acked(pid uint16) {
	c.mu.Lock()
	ch := c.acks[pid]
	delete(c.acks, pid)
	c.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (c *conn) untrack(pid uint16) {
	c.mu.Lock()
	delete(c.acks, pid)
	c.mu.Unlock()
}

// subscription returns the QoS to send topic at, min(subscription QoS, 1)
// (docs/edge-protocol.md#telemetry-topics-and-properties), if a subscription accepted by accept (nil: any)
// matches topic.
func (c *conn) subscription(topic string, accept func(filter string) bool) (byte, bool) {
	best := -1
	for filter, sub := range c.cl.State.Subscriptions.GetAll() {
		if accept != nil && !accept(filter) || !matchFilter(filter, topic) {
			continue
		}
		best = max(best, int(sub.Qos))
	}
	if best < 0 {
		return 0, false
	}
	return min(byte(best), 1), true
}

// connOf returns the connection of a mochi client, nil when it has none.
func (s *Server) connOf(cl *mqtt.Client) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byClient[cl]
}

// connected returns the registered, ready connection of id, nil if none.
func (s *Server) connected(id identity) *conn {
	s.mu.Lock()
	c := s.conns[id]
	s.mu.Unlock()
	if c == nil || !c.ready.Load() || c.closed() {
		return nil
	}
	return c
}

// unregister forgets c.
func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	if s.byClient[c.cl] == c {
		delete(s.byClient, c.cl)
	}
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
	c.close("disconnected")
}

// connEnded runs when mochi is done with a network connection, whatever
// path it took (some failures after OnConnect skip OnDisconnect).
func (s *Server) connEnded(nc net.Conn) {
	s.mu.Lock()
	var gone []*conn
	for _, c := range s.byClient {
		if c.netConn == nc {
			gone = append(gone, c)
		}
	}
	s.mu.Unlock()
	for _, c := range gone {
		s.unregister(c)
	}
}

// Connected reports whether the identity (module "" for a device) has a
// connection that has been accepted (from just before its CONNACK).
func (s *Server) Connected(device, module string) bool {
	s.mu.Lock()
	c := s.conns[identity{device, module}]
	s.mu.Unlock()
	return c != nil && !c.closed()
}

// DropAll closes every client connection, as edgeHub restarting would.
func (s *Server) DropAll() {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.byClient))
	for _, c := range s.byClient {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close("dropped (fault)")
	}
}

// StallAcks holds every client PUBLISH, and so its PUBACK, for d from now:
// edgeHub's back-pressure, which stops reading the socket
// (docs/edge-protocol.md#edgehub-delivery). The connection reads nothing else meanwhile.
func (s *Server) StallAcks(d time.Duration) {
	s.stallUntil.Store(time.Now().Add(d).UnixNano())
}

// RefuseConnects answers every CONNECT for d from now with CONNACK 3
// (server unavailable).
func (s *Server) RefuseConnects(d time.Duration) {
	s.refuseTill.Store(time.Now().Add(d).UnixNano())
}

// LoseTwinAnswers loses the next n twin answers: each request ($iothub/twin/GET,
// or a reported patch, which is still applied) is processed, and its
// answer on $iothub/twin/res is never sent, as when it is lost on the way.
func (s *Server) LoseTwinAnswers(n int) {
	s.loseTwin.Store(int64(n))
}

// loseTwinAnswer reports whether to lose this twin answer, counting it.
func (s *Server) loseTwinAnswer() bool {
	for {
		n := s.loseTwin.Load()
		if n <= 0 {
			return false
		}
		if s.loseTwin.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// stall waits out StallAcks for c.
func (s *Server) stall(c *conn) {
	d := time.Until(time.Unix(0, s.stallUntil.Load()))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.done:
	case <-s.stopping:
	}
}
