package hubemu

import (
	"strings"
	"testing"
)

// IoT Hub meters a message as its body, the values of its system
// properties and the names and values of its application properties, in
// 4 KB units (docs/edge-protocol.md#metering). Through edgeHub, only the
// system properties edgeHub forwards upstream count: never $.on or $.exp.
func TestBilled(t *testing.T) {
	body := func(n int) []byte { return []byte(strings.Repeat("x", n)) }
	for _, tc := range []struct {
		name        string
		m           Message
		module      bool
		bytes, unit int
	}{
		{"empty", Message{}, false, 0, 1},
		{"one byte", Message{Body: body(1)}, false, 1, 1},
		{"exactly 4096", Message{Body: body(4096)}, false, 4096, 1},
		{"4097", Message{Body: body(4097)}, false, 4097, 2},
		{"8192", Message{Body: body(8192)}, false, 8192, 2},
		{"256 KiB", Message{Body: body(256 << 10)}, false, 256 << 10, 64},
		// 4090 + "m-1" (3) + "site" "n" (5): 4098.
		{"properties tip it over", Message{Body: body(4090), System: map[string]string{"$.mid": "m-1"}, Properties: map[string]string{"site": "n"}}, false, 4098, 2},
		{"system values, not names", Message{Body: body(10), System: map[string]string{"$.mid": "abc", "$.ct": "application/json", "$.ce": "utf-8"}}, false, 10 + 3 + 16 + 5, 1},
		{"a device's $.on counts", Message{Body: body(4090), System: map[string]string{"$.on": "telemetry"}}, false, 4099, 2},
		{"edgeHub drops $.on and $.exp", Message{Body: body(4090), System: map[string]string{"$.on": "telemetry", "$.exp": "2026-12-07T22:00:00Z", "$.mid": "abcdef"}}, true, 4096, 1},
		{"the hub's own stamps do not count", Message{Body: body(4096), System: map[string]string{"$.cdid": "edge1", "$.cmid": "relay"}}, true, 4096, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := billed(tc.m, tc.module)
			if got != tc.bytes || units(got) != tc.unit {
				t.Errorf("billed(%s) = %d bytes, %d units; want %d, %d", tc.name, got, units(got), tc.bytes, tc.unit)
			}
		})
	}
}
