package hubemu

// MeterSize is IoT Hub's message meter on paid tiers: a device-to-cloud
// message is billed, and counted against the daily quota, as one message
// per started 4 KB of its size (docs/edge-protocol.md#metering).
const MeterSize = 4096

// forwarded are the system properties edgeHub passes upstream with a
// module's message (its CloudProxy message converter): the others,
// $.on and $.exp among them, stay on the device.
var forwarded = map[string]bool{
	"$.mid": true, "$.cid": true, "$.uid": true, "$.ct": true, "$.ce": true,
	"$.ctime": true, "$.schema": true, "$.sub": true,
}

// billed is the size IoT Hub meters of m as sent (docs/edge-protocol.md#metering):
// the body, the values (not the names) of the system properties, and the
// names and values of the application properties. The properties IoT
// Hub stamps itself ($.cdid, $.cmid) are left out. A module's message
// reaches IoT Hub through edgeHub, which forwards only some system
// properties; a device's goes straight there with all it set.
func billed(m Message, viaEdgeHub bool) int {
	n := len(m.Body)
	for k, v := range m.System {
		switch {
		case k == "$.cdid" || k == "$.cmid":
		case viaEdgeHub && !forwarded[k]:
		default:
			n += len(v)
		}
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// units is how many messages IoT Hub bills for a metered size: one per
// started MeterSize, and at least one.
func units(size int) int {
	return max(1, (size+MeterSize-1)/MeterSize)
}
