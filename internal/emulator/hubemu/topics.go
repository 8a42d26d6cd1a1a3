package hubemu

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// topicKind is what an inbound PUBLISH topic asks for.
type topicKind int

const (
	// kindUnknown matches none of edgeHub's inbound templates: the message is
	// dropped but still acknowledged (docs/edge-protocol.md#limits).
	kindUnknown topicKind = iota
	kindTelemetry
	kindTwinGet
	kindTwinReported
	kindMethodResponse
)

// inTopic is a parsed inbound topic.
type inTopic struct {
	kind topicKind
	// device and module name the identity in a telemetry topic; module is
	// empty for a device's topic.
	device, module string
	// props is the property bag of telemetry (docs/edge-protocol.md#telemetry-topics-and-properties) or the
	// query of a $iothub topic.
	props map[string]string
	// rid is $rid of twin and method topics, status the method status.
	rid    string
	status int
}

var errNoRID = errors.New("$rid missing or empty")

// errEventsLevels is telemetry with more than one level after events/.
// edgeHub matches it to no template and drops it, still acknowledged;
// the emulator closes the connection instead, so that the loss is seen
// (docs/edge-protocol.md#limits).
var errEventsLevels = errors.New("telemetry topic with more than one level after events/")

// propRetain is the application property IoT Hub sets on a message
// published with the retain flag.
const propRetain = "mqtt-retain"

// parseTopic maps an inbound topic onto edgeHub's inbound templates
// (docs/edge-protocol.md#telemetry-topics-and-properties, #twin-and-methods-over-mqtt; appsettings_hub.json InboundTemplates).
// A topic that matches no template is kindUnknown without an error; an
// error means the topic matched a template but its content is unusable
// (bad percent-encoding, no $rid), or is telemetry with more than one
// level after events/ (errEventsLevels).
func parseTopic(topic string) (inTopic, error) {
	if rest, ok := strings.CutPrefix(topic, "$iothub/"); ok {
		return parseIoTHubTopic(rest)
	}
	segs := strings.Split(topic, "/")
	if len(segs) < 4 || segs[0] != "devices" || segs[1] == "" {
		return inTopic{}, nil
	}
	t := inTopic{device: segs[1]}
	var rest []string
	switch {
	case len(segs) >= 6 && segs[2] == "modules" && segs[3] != "" && segs[4] == "messages" && segs[5] == "events":
		t.module, rest = segs[3], segs[6:]
	case segs[2] == "messages" && segs[3] == "events":
		rest = segs[4:]
	default:
		return inTopic{}, nil
	}
	// The four templates: .../events, .../events/, .../events/{params},
	// .../events/{params}/ ({params} is one path segment).
	var bag string
	switch {
	case len(rest) == 0:
	case len(rest) == 1:
		bag = rest[0]
	case len(rest) == 2 && rest[1] == "":
		bag = rest[0]
	default:
		return inTopic{}, errEventsLevels
	}
	props, err := parseProperties(bag)
	if err != nil {
		return inTopic{}, err
	}
	t.kind, t.props = kindTelemetry, props
	return t, nil
}

func parseIoTHubTopic(rest string) (inTopic, error) {
	var t inTopic
	var query string
	switch {
	case strings.HasPrefix(rest, "twin/GET/"):
		t.kind, query = kindTwinGet, strings.TrimPrefix(rest, "twin/GET/")
	case strings.HasPrefix(rest, "twin/PATCH/properties/reported/"):
		t.kind, query = kindTwinReported, strings.TrimPrefix(rest, "twin/PATCH/properties/reported/")
	case strings.HasPrefix(rest, "methods/res/"):
		status, q, ok := strings.Cut(strings.TrimPrefix(rest, "methods/res/"), "/")
		if !ok {
			return inTopic{}, nil
		}
		n, err := strconv.Atoi(status)
		if err != nil {
			return inTopic{}, nil
		}
		t.kind, t.status, query = kindMethodResponse, n, q
	default:
		return inTopic{}, nil
	}
	// edgeHub throws on an empty $rid (MessagingServiceClient.ProcessTwinAsync),
	// which closes the connection; a missing query is treated the same.
	q, ok := strings.CutPrefix(query, "?")
	if !ok {
		return inTopic{}, errNoRID
	}
	props, err := parseProperties(q)
	if err != nil {
		return inTopic{}, err
	}
	t.props, t.rid = props, props["$rid"]
	if t.rid == "" {
		return inTopic{}, errNoRID
	}
	return t, nil
}

// parseProperties decodes a property bag: pairs split on '&', each split on
// its first '=', both halves RFC 3986 percent-decoded ('+' stays '+'); a key
// without '=' has an empty (null) value (docs/edge-protocol.md#telemetry-topics-and-properties). Empty
// pairs are skipped.
func parseProperties(bag string) (map[string]string, error) {
	props := map[string]string{}
	if bag == "" {
		return props, nil
	}
	for pair := range strings.SplitSeq(bag, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("property name %q: %w", k, err)
		}
		if key == "" {
			return nil, fmt.Errorf("property without a name in %q", pair)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", key, err)
		}
		props[key] = val
	}
	return props, nil
}

// systemOrder is the order system properties are written in, after
// SystemProperties.OutgoingSystemPropertiesMap; others follow sorted.
var systemOrder = []string{"$.mid", "$.cid", "$.uid", "$.ct", "$.ce", "$.exp", "$.to", "$.schema", "$.ctime", "$.ifid", "$.sub", "$.cdid", "$.cmid"}

// encodeProperties writes system properties first, then user properties
// sorted, as the SDKs do (docs/edge-protocol.md#telemetry-topics-and-properties), percent-encoding all but
// RFC 3986 unreserved characters ('$' becomes %24, space %20).
func encodeProperties(system, user map[string]string) string {
	var b strings.Builder
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(sas.Escape(k))
		b.WriteByte('=')
		b.WriteString(sas.Escape(v))
	}
	for _, k := range systemOrder {
		if v, ok := system[k]; ok {
			add(k, v)
		}
	}
	for _, k := range sortedKeys(system) {
		if !slices.Contains(systemOrder, k) {
			add(k, system[k])
		}
	}
	for _, k := range sortedKeys(user) {
		add(k, user[k])
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// splitProperties separates system properties ($.-prefixed) from
// application properties.
func splitProperties(props map[string]string) (system, user map[string]string) {
	system, user = map[string]string{}, map[string]string{}
	for k, v := range props {
		if strings.HasPrefix(k, "$.") {
			system[k] = v
		} else {
			user[k] = v
		}
	}
	return system, user
}

// matchFilter reports whether an MQTT topic filter matches topic (MQTT
// 3.1.1 §4.7): '+' is one level, a trailing '#' this level and all below,
// and wildcards at the first level do not match topics starting with '$'.
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return i == len(fs)-1
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// moduleMessagesFilter is how edgeHub recognizes the module-messages
// subscription (SessionStateParser, docs/edge-protocol.md#telemetry-topics-and-properties).
var moduleMessagesFilter = regexp.MustCompile(`^devices/.+/modules/.+/#$`)

// twinResponseFilter must be subscribed exactly (docs/edge-protocol.md#twin-and-methods-over-mqtt).
const twinResponseFilter = "$iothub/twin/res/#"
