package edgehub

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// System property keys on the wire (docs/edge-protocol.md#telemetry-topics-and-properties).
const (
	PropOutput          = "$.on"
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropExpiry          = "$.exp"
	PropConnDevice      = "$.cdid"
	PropConnModule      = "$.cmid"
)

// escape percent-encodes s as RFC 3986 wants: everything but unreserved
// characters, so a space is %20 (never +) and $ is %24, as the SDKs send.
func escape(s string) string {
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			return string(appendEscaped(make([]byte, 0, len(s)+8), s))
		}
	}
	return s
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// appendEscaped appends s to dst, percent-encoded as escape does.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		if c := s[i]; unreserved(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// prop is a system property; those with an empty value are not sent.
type prop struct{ k, v string }

// systemOrder is the order system properties are written in.
var systemOrder = [...]string{PropOutput, PropMessageID, PropCorrelationID, PropContentType, PropContentEncoding, PropExpiry}

// appendBag appends a property bag to dst: the system properties in
// order, then the application properties sorted by key, as the SDKs
// write them. It returns the bag's routing size too: every key and value
// (docs/edge-protocol.md#limits). It runs for every reading, so it keeps
// to the appends into dst (and a sort of app's keys when there are more
// than a handful).
func appendBag(dst []byte, system []prop, app map[string]string) ([]byte, int) {
	n, sep := 0, false
	add := func(k, v string) {
		if sep {
			dst = append(dst, '&')
		}
		dst = append(appendEscaped(dst, k), '=')
		dst = appendEscaped(dst, v)
		n += len(k) + len(v)
		sep = true
	}
	for _, p := range system {
		if p.v != "" {
			add(p.k, p.v)
		}
	}
	var stack [8]string
	keys := stack[:0]
	for k := range app {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(k, app[k])
	}
	return dst, n
}

// ParseProperties splits a topic's property bag into system ("$."
// prefixed) and application properties. A key without "=" has an empty
// value (docs/edge-protocol.md#telemetry-topics-and-properties).
func ParseProperties(bag string) (system, app map[string]string, err error) {
	system, app = map[string]string{}, map[string]string{}
	bag = strings.TrimPrefix(bag, "?")
	if bag == "" {
		return system, app, nil
	}
	for kv := range strings.SplitSeq(bag, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, nil, fmt.Errorf("property key %q: %w", k, err)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, nil, fmt.Errorf("property %q: %w", key, err)
		}
		if strings.HasPrefix(key, "$.") {
			system[key] = val
		} else {
			app[key] = val
		}
	}
	return system, app, nil
}

// MeterSize is IoT Hub's billing unit: a message is billed one message
// per started MeterSize bytes of its metered size (Billed,
// docs/edge-protocol.md#metering).
const MeterSize = 4096

// Billed is the size IoT Hub meters of m (docs/edge-protocol.md#metering):
// the body, the values of the system properties that reach it ($.on
// never does: edgeHub keeps it, and a device does not send it), and the
// names and values of the application properties. $.exp counts, although
// edgeHub keeps it too, so that Billed is never less than what IoT Hub
// bills. A message is billed one unit per started 4096 bytes of it.
// m.ID counts as it is.
func Billed(m *Message) int {
	n := len(m.Body) + len(m.ID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	if !m.Expiry.IsZero() {
		n += len(m.Expiry.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}
