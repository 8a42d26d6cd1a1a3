package hubemu

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Message is a telemetry message as the emulator holds it.
type Message struct {
	Body []byte `json:"body"`
	// Properties are the application properties.
	Properties map[string]string `json:"properties,omitempty"`
	// System are the system properties by wire name: "$.mid", "$.cid",
	// "$.ct", "$.ce", "$.on", and "$.cdid"/"$.cmid", which the emulator
	// sets to the sender's identity.
	System map[string]string `json:"systemProperties,omitempty"`
	// From is the sender, "device/module" or "device".
	From string `json:"from,omitempty"`
	// Output is the sender's output ("$.on"), empty for none.
	Output string `json:"output,omitempty"`
	// Received is when the emulator accepted the message (Config.Now).
	Received time.Time `json:"received"`
	// Billed is the size IoT Hub meters of the message and Units the
	// messages it bills for it (docs/edge-protocol.md#metering); set on
	// what reaches $upstream only, as routes to module inputs stay on
	// the device.
	Billed int `json:"billed,omitempty"`
	Units  int `json:"units,omitempty"`
}

func (m Message) clone() Message {
	m.Body = slices.Clone(m.Body)
	m.Properties = maps.Clone(m.Properties)
	m.System = maps.Clone(m.System)
	return m
}

// size is the routing size of a message: body plus every property name and
// value (Routing.Core Message.Size, docs/edge-protocol.md#limits).
func (m Message) size() int {
	n := len(m.Body)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	for k, v := range m.System {
		n += len(k) + len(v)
	}
	return n
}

// route is one parsed edgeHub route.
type route struct {
	name string
	src  source
	dst  sink
}

// source is a route's FROM.
type source struct {
	modulesOnly bool   // /messages/modules/*: not leaf devices
	module      string // "" matches every sender
	// outputs: only messages sent to an output; output "" any of them.
	outputs bool
	output  string
}

// sink is a route's INTO: upstream, or a module input.
type sink struct {
	upstream      bool
	module, input string
}

var (
	routeRE    = regexp.MustCompile(`(?is)^\s*FROM\s+(\S+)\s+(?:(WHERE)\s+.*?\s+)?INTO\s+(.+?)\s*$`)
	brokeredRE = regexp.MustCompile(`(?i)^BrokeredEndpoint\s*\(\s*(?:"([^"]*)"|'([^']*)')\s*\)$`)
	inputRE    = regexp.MustCompile(`^/modules/([^/]+)/inputs/([^/]+)$`)
	moduleSrc  = regexp.MustCompile(`^/messages/modules/([^/*]+)(/\*|/outputs/\*|/outputs/([^/*]+))?$`)
)

// parseRoute parses an edgeHub route (docs/edge-protocol.md#deployments): FROM, a source,
// INTO and a sink; WHERE conditions are not supported.
func parseRoute(name, text string) (route, error) {
	m := routeRE.FindStringSubmatch(text)
	if m == nil {
		return route{}, fmt.Errorf("route %q: want FROM <source> INTO <sink>: %q", name, text)
	}
	if m[2] != "" {
		return route{}, fmt.Errorf("route %q: WHERE conditions are not supported by the emulator", name)
	}
	r := route{name: name}
	switch src := m[1]; {
	case src == "/*" || src == "/messages" || src == "/messages/*":
	case src == "/messages/modules" || src == "/messages/modules/*":
		r.src.modulesOnly = true
	case moduleSrc.MatchString(src):
		sm := moduleSrc.FindStringSubmatch(src)
		r.src.module = sm[1]
		switch {
		case sm[2] == "/outputs/*":
			r.src.outputs = true
		case sm[3] != "":
			r.src.outputs, r.src.output = true, sm[3]
		}
	default:
		return route{}, fmt.Errorf("route %q: unsupported source %q", name, src)
	}
	switch dst := m[3]; {
	case strings.EqualFold(dst, "$upstream"):
		r.dst.upstream = true
	case brokeredRE.MatchString(dst):
		bm := brokeredRE.FindStringSubmatch(dst)
		ep := bm[1] + bm[2]
		im := inputRE.FindStringSubmatch(ep)
		if im == nil {
			return route{}, fmt.Errorf("route %q: endpoint %q, want /modules/{module}/inputs/{input}", name, ep)
		}
		r.dst.module, r.dst.input = im[1], im[2]
	default:
		return route{}, fmt.Errorf("route %q: unsupported sink %q", name, dst)
	}
	return r, nil
}

// match reports whether a message from id to output takes the route.
func (src source) match(id identity, output string) bool {
	if src.modulesOnly && id.module == "" {
		return false
	}
	if src.module == "" {
		return true
	}
	if id.module != src.module {
		return false
	}
	if !src.outputs {
		return true
	}
	return output != "" && (src.output == "" || src.output == output)
}

// ingest routes a telemetry message from id (docs/edge-protocol.md#telemetry-topics-and-properties, #edgehub-delivery). It
// returns once the message is in every sink, before the PUBACK.
func (s *Server) ingest(id identity, t inTopic, body []byte) {
	if t.device != id.device || t.module != id.module {
		return
	}
	system, user := splitProperties(t.props)
	// edgeHub stamps the connection identity; a client cannot choose it.
	delete(system, "$.cmid")
	system["$.cdid"] = id.device
	if id.module != "" {
		system["$.cmid"] = id.module
	}
	msg := Message{Body: body, Properties: user, System: system, From: id.String(), Output: system["$.on"], Received: s.now()}
	if n := msg.size(); n > maxMessageSize {
		s.log.Info().Str("client", id.String()).Int("size", n).Msg("message dropped: larger than 256 KiB")
		return
	}
	seen := map[sink]bool{}
	for _, r := range s.routes {
		if !r.src.match(id, msg.Output) || seen[r.dst] {
			continue
		}
		seen[r.dst] = true
		if r.dst.upstream {
			up := msg.clone()
			up.Billed = billed(up, id.module != "")
			up.Units = units(up.Billed)
			s.appendUpstream(up)
			continue
		}
		s.enqueue(identity{id.device, r.dst.module}, r.dst.input, msg.clone())
	}
	if len(seen) == 0 {
		s.log.Info().Str("client", id.String()).Str("output", msg.Output).Msg("message dropped: no route matches")
	}
}

func (s *Server) appendUpstream(m Message) {
	s.mu.Lock()
	if len(s.upstream) >= s.upKeep {
		// Drop the oldest; append moves the kept ones to a new array
		// once the old one's capacity is used up.
		s.upstream[0] = Message{}
		s.upstream = s.upstream[1:]
		s.upBase++
	}
	s.upstream = append(s.upstream, m)
	close(s.upWake)
	s.upWake = make(chan struct{})
	s.mu.Unlock()
}

// Upstream returns copies of the messages routed to $upstream that are
// still kept (Config.UpstreamKeep), in arrival order.
func (s *Server) Upstream() []Message {
	msgs, _ := s.UpstreamFrom(0)
	return msgs
}

// UpstreamFrom returns copies of the messages routed to $upstream from
// the index from on (0 is the first message ever routed), and the index
// of the first one returned: the oldest kept when from is older, the
// count so far when from is past it.
func (s *Server) UpstreamFrom(from int) ([]Message, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from = min(max(from, s.upBase), s.upBase+len(s.upstream))
	kept := s.upstream[from-s.upBase:]
	out := make([]Message, len(kept))
	for i, m := range kept {
		out[i] = m.clone()
	}
	return out, from
}

// WaitUpstream waits until at least n messages have been routed to
// $upstream and returns those kept (Upstream); it fails with ErrStopped when the
// server stops first.
func (s *Server) WaitUpstream(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		have, wake := s.upBase+len(s.upstream), s.upWake
		s.mu.Unlock()
		if have >= n {
			return s.Upstream(), nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %d upstream messages, have %d: %w", n, have, context.Cause(ctx))
		case <-s.stopping:
			return nil, fmt.Errorf("wait for %d upstream messages, have %d: %w", n, have, ErrStopped)
		}
	}
}
