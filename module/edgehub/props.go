package edgehub

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
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
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(s)+8), s[:i]...)
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	if b == nil {
		return s
	}
	return string(b)
}

// encodeProperties writes a property bag: system properties first, in a
// fixed order, then application properties sorted by key.
func encodeProperties(system, app map[string]string) string {
	var parts []string
	for _, k := range []string{PropOutput, PropMessageID, PropCorrelationID, PropContentType, PropContentEncoding, PropExpiry} {
		if v, ok := system[k]; ok {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(app)) {
		parts = append(parts, escape(k)+"="+escape(app[k]))
	}
	return strings.Join(parts, "&")
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

// propertiesSize is what edgeHub counts of a message's properties towards
// the 256 KiB limit: every key and value (docs/edge-protocol.md#limits).
func propertiesSize(system, app map[string]string) int {
	n := 0
	for _, m := range []map[string]string{system, app} {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	return n
}
