package hubemu

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// identity is a device ({d}) or a module ({d}/{m}) identity.
type identity struct{ device, module string }

// String is the identity id, which is also the MQTT client id.
func (id identity) String() string {
	if id.module == "" {
		return id.device
	}
	return id.device + "/" + id.module
}

// resource is the audience of the identity's tokens at host.
func (id identity) resource(host string) string {
	if id.module == "" {
		return sas.DeviceResource(host, id.device)
	}
	return sas.ModuleResource(host, id.device, id.module)
}

// prefix is the start of the identity's own topics.
func (id identity) prefix() string {
	if id.module == "" {
		return "devices/" + id.device + "/"
	}
	return "devices/" + id.device + "/modules/" + id.module + "/"
}

// owns reports whether a topic a client publishes to belongs to the
// client's identity: its own devices/... topics or the $iothub/ topics,
// which are always the connection's own.
func (id identity) owns(topic string) bool {
	if strings.HasPrefix(topic, "$iothub/") {
		return true
	}
	if !strings.HasPrefix(topic, "devices/") {
		// Matches no identity at all: an unknown topic, not a foreign one.
		return true
	}
	if !strings.HasPrefix(topic, id.prefix()) {
		return false
	}
	// A device does not own its modules' topics.
	return id.module != "" || !strings.HasPrefix(topic, id.prefix()+"modules/")
}

// maySubscribe reports whether the identity may subscribe to filter: only
// filters inside its own topics or $iothub/ (docs/edge-protocol.md#telemetry-topics-and-properties, #twin-and-methods-over-mqtt), so
// that no wildcard reaches another identity's messages.
func (id identity) maySubscribe(filter string) bool {
	if strings.HasPrefix(filter, "$iothub/") {
		return true
	}
	if id.module == "" {
		return strings.HasPrefix(filter, id.prefix()+"messages/devicebound/")
	}
	return strings.HasPrefix(filter, id.prefix())
}

// refusal is why a CONNECT is refused, with the CONNACK to send.
type refusal struct {
	code   packets.Code // mapped by mochi to the 3.1.1 return code
	reason string
}

func (r *refusal) Error() string { return r.reason }

func notAuthorized(format string, a ...any) *refusal {
	// mochi maps ErrBadUsernameOrPassword to 3.1.1 return code 5.
	return &refusal{code: packets.ErrBadUsernameOrPassword, reason: fmt.Sprintf(format, a...)}
}

func unavailable(format string, a ...any) *refusal {
	// ErrServerUnavailable becomes 3.1.1 return code 3.
	return &refusal{code: packets.ErrServerUnavailable, reason: fmt.Sprintf(format, a...)}
}

// authenticate checks a CONNECT as edgeHub does (docs/edge-protocol.md#mqtt-to-edgehub, #sas-tokens-for-edgehub):
// CONNACK 3 for refused connects and malformed usernames, 5 for anything
// about identity or token.
func (s *Server) authenticate(cl *mqtt.Client, pk packets.Packet) (identity, *sas.Token, *refusal) {
	if pk.ProtocolVersion != 4 {
		// edgeHub speaks MQTT 3.1.1 only; a 3.1.1 server answers other
		// protocol levels with return code 1 [MQTT-3.1.2-2].
		return identity{}, nil, &refusal{code: packets.ErrUnsupportedProtocolVersion, reason: fmt.Sprintf("protocol level %d, want 4 (MQTT 3.1.1)", pk.ProtocolVersion)}
	}
	if time.Now().UnixNano() < s.refuseTill.Load() {
		return identity{}, nil, unavailable("refusing connections (fault)")
	}
	id, err := parseUsername(string(pk.Connect.Username))
	if err != nil {
		return identity{}, nil, unavailable("%v", err)
	}
	// DeviceIdentityProvider: the client id must equal the identity id,
	// ordinal compare.
	if pk.Connect.ClientIdentifier != id.String() {
		return identity{}, nil, notAuthorized("client id %q does not match username identity %q", pk.Connect.ClientIdentifier, id)
	}
	if !pk.Connect.PasswordFlag || len(pk.Connect.Password) == 0 {
		return identity{}, nil, notAuthorized("%s: no password (client certificates are not supported)", id)
	}
	keys, ok := s.keys(id.device, id.module)
	if !ok {
		return identity{}, nil, notAuthorized("%s: unknown identity", id)
	}
	tok, err := sas.Parse(string(pk.Connect.Password))
	if err != nil {
		return identity{}, nil, notAuthorized("%s: %v", id, err)
	}
	if err := s.checkToken(id, tok, keys); err != nil {
		return identity{}, nil, notAuthorized("%s: %v", id, err)
	}
	return id, tok, nil
}

// checkToken verifies the audience, expiry and signature of a token for id
// (docs/edge-protocol.md#sas-tokens-for-edgehub): audience
// {host}/devices/{d}[/modules/{m}] with host the hub or the gateway,
// case-insensitive; expired past se + 5 min; HMAC over the raw sr with one
// of the identity's keys. As edgeHub does, a module's token may also have
// its device's audience, and be signed with its device's key
// (DeviceScopeTokenAuthenticator.ValidateAudience takes {host}/devices/{d}
// for a module of d; edgeHub builds it with allowDeviceAuthForModule, and
// DeviceScopeAuthenticator then tries the device's keys "the module could
// have used the Device key to sign its token"). The module itself must
// still have an identity: authenticate looks it up first.
func (s *Server) checkToken(id identity, tok *sas.Token, keys [][]byte) error {
	aud := s.matchAudience(tok, id)
	if aud != nil && id.module != "" && s.matchAudience(tok, identity{device: id.device}) == nil {
		aud = nil
	}
	if aud != nil {
		return aud
	}
	if id.module != "" {
		if k, ok := s.cfgKey(id.device, ""); ok {
			keys = append(keys[:len(keys):len(keys)], k)
		}
	}
	err := sas.ErrSignature
	for _, k := range keys {
		if err = tok.Verify(k, s.now()); !errors.Is(err, sas.ErrSignature) {
			return err
		}
	}
	return err
}

// matchAudience checks a token's audience against id's resource at the hub
// or at the gateway.
func (s *Server) matchAudience(tok *sas.Token, id identity) error {
	if err := tok.MatchAudience(id.resource(s.hub)); err == nil {
		return nil
	}
	return tok.MatchAudience(id.resource(s.gateway))
}

// parseUsername reads the identity from a CONNECT username the way
// MqttUsernameParser does (docs/edge-protocol.md#mqtt-to-edgehub):
// {host}/{d}[/{m}]/?{query} or {host}/{d}[/{m}]/{query}; the host is
// ignored, ids are trimmed but not decoded, and the query must hold a
// non-blank api-version.
func parseUsername(u string) (identity, error) {
	segs := strings.Split(u, "/")
	last := segs[len(segs)-1]
	var query string
	switch {
	case strings.HasPrefix(last, "?"):
		query = last[1:]
	case strings.Contains(last, "api-version="):
		query = last
	default:
		return identity{}, errors.New("username has no query with api-version")
	}
	var id identity
	switch len(segs) {
	case 3:
		id.device = strings.TrimSpace(segs[1])
	case 4:
		id.device, id.module = strings.TrimSpace(segs[1]), strings.TrimSpace(segs[2])
	default:
		return identity{}, fmt.Errorf("username has %d segments, want 3 or 4", len(segs))
	}
	if id.device == "" || len(segs) == 4 && id.module == "" {
		return identity{}, errors.New("username names an empty device or module id")
	}
	var apiVersion string
	for pair := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k != "api-version" {
			continue
		}
		dec, err := url.PathUnescape(v)
		if err != nil {
			return identity{}, fmt.Errorf("username api-version: %w", err)
		}
		apiVersion = dec
	}
	if strings.TrimSpace(apiVersion) == "" {
		return identity{}, errors.New("username lacks a non-empty api-version")
	}
	return id, nil
}

// reauthLoop re-authenticates every connection each interval and closes
// those whose token no longer verifies (expired past the skew, identity
// removed, key changed), like edgeHub's ConnectionReauthenticator
// (docs/edge-protocol.md#sas-tokens-for-edgehub).
func (s *Server) reauthLoop() {
	t := time.NewTicker(s.reauth)
	defer t.Stop()
	for {
		select {
		case <-s.stopping:
			return
		case <-t.C:
		}
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.byClient))
		for _, c := range s.byClient {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			keys, ok := s.keys(c.id.device, c.id.module)
			if !ok {
				c.close("re-authentication: identity removed")
				continue
			}
			if err := s.checkToken(c.id, c.token, keys); err != nil {
				c.close("re-authentication: " + err.Error())
			}
		}
	}
}
