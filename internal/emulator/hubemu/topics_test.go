package hubemu

import (
	"maps"
	"strings"
	"testing"
)

var topicTests = []struct {
	topic   string
	want    inTopic
	wantErr bool
}{
	// The four inbound telemetry templates (docs/edge-protocol.md#telemetry-topics-and-properties).
	{topic: "devices/edge1/modules/filter/messages/events", want: inTopic{kind: kindTelemetry, device: "edge1", module: "filter", props: map[string]string{}}},
	{topic: "devices/edge1/modules/filter/messages/events/", want: inTopic{kind: kindTelemetry, device: "edge1", module: "filter", props: map[string]string{}}},
	{topic: "devices/edge1/modules/filter/messages/events/a=1", want: inTopic{kind: kindTelemetry, device: "edge1", module: "filter", props: map[string]string{"a": "1"}}},
	{topic: "devices/edge1/modules/filter/messages/events/a=1/", want: inTopic{kind: kindTelemetry, device: "edge1", module: "filter", props: map[string]string{"a": "1"}}},
	{
		topic: "devices/edge1/modules/filter/messages/events/%24.on=alerts&%24.mid=6f1c&%24.ct=application%2Fjson&%24.ce=utf-8&severity=high&site=plant%201",
		want: inTopic{kind: kindTelemetry, device: "edge1", module: "filter", props: map[string]string{
			"$.on": "alerts", "$.mid": "6f1c", "$.ct": "application/json", "$.ce": "utf-8", "severity": "high", "site": "plant 1",
		}},
	},
	// A key without '=' is null; '+' is not a space (RFC 3986); '=' in a
	// value stays; empty pairs are skipped.
	{topic: "devices/d/modules/m/messages/events/flag&a%2Bb=c+d&&x=y=z", want: inTopic{kind: kindTelemetry, device: "d", module: "m", props: map[string]string{"flag": "", "a+b": "c+d", "x": "y=z"}}},
	{topic: "devices/d/messages/events/k=v", want: inTopic{kind: kindTelemetry, device: "d", props: map[string]string{"k": "v"}}},
	{topic: "devices/d/messages/events", want: inTopic{kind: kindTelemetry, device: "d", props: map[string]string{}}},
	{topic: "devices/d/modules/m/messages/events/a=%zz", wantErr: true},
	{topic: "devices/d/modules/m/messages/events/=v", wantErr: true},
	// Telemetry with more than one level after events/: edgeHub drops
	// it unseen; the emulator closes the connection.
	{topic: "devices/d/modules/m/messages/events/a=1/b=2", wantErr: true},
	{topic: "devices/d/messages/events/a/b/", wantErr: true},
	// Not a template: dropped but acknowledged.
	{topic: "devices/d/modules/m/messages/event"},
	{topic: "devices/d/modules/m/inputs/in1/"},
	{topic: "devices//messages/events"},
	{topic: "foo/bar"},
	{topic: "$iothub/twin/PATCH/properties/desired/?$version=2"},
	{topic: "$iothub/methods/res/abc/?$rid=1"},
	// Twin and methods (docs/edge-protocol.md#twin-and-methods-over-mqtt).
	{topic: "$iothub/twin/GET/?$rid=42", want: inTopic{kind: kindTwinGet, rid: "42", props: map[string]string{"$rid": "42"}}},
	{topic: "$iothub/twin/PATCH/properties/reported/?$rid=a%20b", want: inTopic{kind: kindTwinReported, rid: "a b", props: map[string]string{"$rid": "a b"}}},
	{topic: "$iothub/methods/res/200/?$rid=7", want: inTopic{kind: kindMethodResponse, rid: "7", status: 200, props: map[string]string{"$rid": "7"}}},
	{topic: "$iothub/twin/GET/?$rid=", wantErr: true},
	{topic: "$iothub/twin/GET/", wantErr: true},
	{topic: "$iothub/twin/PATCH/properties/reported/?x=1", wantErr: true},
}

func TestParseTopic(t *testing.T) {
	for _, tt := range topicTests {
		got, err := parseTopic(tt.topic)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseTopic(%q) error = %v, want error %v", tt.topic, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got.kind != tt.want.kind || got.device != tt.want.device || got.module != tt.want.module ||
			got.rid != tt.want.rid || got.status != tt.want.status || (tt.want.kind != kindUnknown && !maps.Equal(got.props, tt.want.props)) {
			t.Errorf("parseTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestEncodeProperties(t *testing.T) {
	got := encodeProperties(
		map[string]string{"$.cmid": "temp", "$.mid": "m 1", "$.cdid": "edge1", "$.zz": "z"},
		map[string]string{"site": "plant 1", "a&b": "c=d", "empty": ""},
	)
	want := "%24.mid=m%201&%24.cdid=edge1&%24.cmid=temp&%24.zz=z&a%26b=c%3Dd&empty=&site=plant%201"
	if got != want {
		t.Errorf("encodeProperties = %q, want %q", got, want)
	}
}

func TestMatchFilter(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"devices/d/modules/m/#", "devices/d/modules/m/inputs/in/a=1", true},
		{"devices/d/modules/m/inputs/#", "devices/d/modules/m/inputs/in/", true},
		{"devices/d/modules/m/#", "devices/d/modules/m", true},
		{"devices/d/modules/x/#", "devices/d/modules/m/inputs/in/", false},
		{"devices/+/modules/m/#", "devices/d/modules/m/inputs/in/", true},
		{"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true},
		{"#", "$iothub/twin/res/200/?$rid=1", false},
		{"+/twin/res/#", "$iothub/twin/res/200/?$rid=1", false},
		{"a/+", "a/b/c", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
	} {
		if got := matchFilter(tt.filter, tt.topic); got != tt.want {
			t.Errorf("matchFilter(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestParseUsername(t *testing.T) {
	for _, tt := range []struct {
		username string
		want     identity
		wantErr  bool
	}{
		{username: "hub.azure-devices.net/edge1/filter/?api-version=2019-10-01&DeviceClientType=py%2F2.14", want: identity{"edge1", "filter"}},
		{username: "ignored/edge1/?api-version=2021-04-12", want: identity{"edge1", ""}},
		{username: "hub/edge1/filter/api-version=2018-06-30", want: identity{"edge1", "filter"}},
		{username: "hub/ edge1 / filter /?api-version=1", want: identity{"edge1", "filter"}},
		{username: "hub/edge1/filter/?DeviceClientType=x", wantErr: true},
		{username: "hub/edge1/filter/?api-version=", wantErr: true},
		{username: "hub/edge1/filter/?api-version=%20", wantErr: true},
		{username: "hub/edge1/filter/", wantErr: true},
		{username: "hub/a/b/c/?api-version=1", wantErr: true},
		{username: "hub/?api-version=1", wantErr: true},
		{username: "hub/edge1//?api-version=1", wantErr: true},
		{username: "", wantErr: true},
	} {
		got, err := parseUsername(tt.username)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseUsername(%q) = %v, %v; want %v, error %v", tt.username, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseRoute(t *testing.T) {
	a, b, dev := identity{"d", "a"}, identity{"d", "b"}, identity{"d", ""}
	for _, tt := range []struct {
		route   string
		wantErr bool
		dst     sink
		from    identity
		output  string
		match   bool
	}{
		{route: `FROM /messages/modules/a/outputs/out1 INTO BrokeredEndpoint("/modules/b/inputs/in1")`, dst: sink{module: "b", input: "in1"}, from: a, output: "out1", match: true},
		{route: `FROM /messages/modules/a/outputs/out1 INTO BrokeredEndpoint("/modules/b/inputs/in1")`, dst: sink{module: "b", input: "in1"}, from: a, output: "out2"},
		{route: `FROM /messages/modules/a/outputs/out1 INTO BrokeredEndpoint("/modules/b/inputs/in1")`, dst: sink{module: "b", input: "in1"}, from: b, output: "out1"},
		{route: `from /messages/modules/a/outputs/* into brokeredEndpoint('/modules/b/inputs/x')`, dst: sink{module: "b", input: "x"}, from: a, output: "any", match: true},
		{route: `FROM /messages/modules/a/outputs/* INTO $upstream`, dst: sink{upstream: true}, from: a, output: ""},
		{route: `FROM /messages/modules/a/* INTO $upstream`, dst: sink{upstream: true}, from: a, output: "", match: true},
		{route: `FROM /messages/* INTO $upstream`, dst: sink{upstream: true}, from: dev, match: true},
		{route: `FROM /messages/modules/* INTO $upstream`, dst: sink{upstream: true}, from: dev},
		{route: `FROM /messages/modules/* INTO $upstream`, dst: sink{upstream: true}, from: b, match: true},
		{route: `FROM /messages/* WHERE $body.t > 1 INTO $upstream`, wantErr: true},
		{route: `FROM /twinChangeNotifications INTO $upstream`, wantErr: true},
		{route: `FROM /messages/* INTO BrokeredEndpoint("/modules/b/outputs/x")`, wantErr: true},
		{route: `FROM /messages/*`, wantErr: true},
	} {
		r, err := parseRoute("r", tt.route)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseRoute(%q) error = %v, want error %v", tt.route, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if r.dst != tt.dst {
			t.Errorf("parseRoute(%q) sink = %+v, want %+v", tt.route, r.dst, tt.dst)
		}
		if got := r.src.match(tt.from, tt.output); got != tt.match {
			t.Errorf("route %q matches %v output %q = %v, want %v", tt.route, tt.from, tt.output, got, tt.match)
		}
	}
}

// The routing size check counts body and every property name and value,
// including the $.cdid/$.cmid the emulator adds (docs/edge-protocol.md#limits).
func TestIngestDropsOversize(t *testing.T) {
	s, err := New(Config{
		Key:    func(string, string) ([]byte, bool) { return nil, true },
		Routes: map[string]string{"up": "FROM /messages/* INTO $upstream"},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := identity{"d", "m"}
	// "$.cdid"+"d"+"$.cmid"+"m" = 14 bytes of system properties.
	fits := inTopic{kind: kindTelemetry, device: "d", module: "m", props: map[string]string{"k": "v"}}
	s.ingest(id, fits, make([]byte, maxMessageSize-14-2))
	s.ingest(id, fits, make([]byte, maxMessageSize-14-1))
	up := s.Upstream()
	if len(up) != 1 || len(up[0].Body) != maxMessageSize-16 {
		t.Fatalf("upstream holds %d messages, want only the one of exactly 256 KiB", len(up))
	}
}

// ingest stamps the connection identity over what the client claims.
func TestIngestStampsIdentity(t *testing.T) {
	s, err := New(Config{
		Key:    func(string, string) ([]byte, bool) { return nil, true },
		Routes: map[string]string{"up": "FROM /messages/* INTO $upstream"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.ingest(identity{"d", ""}, inTopic{kind: kindTelemetry, device: "d", props: map[string]string{"$.cdid": "x", "$.cmid": "y"}}, nil)
	up := s.Upstream()
	if len(up) != 1 || !maps.Equal(up[0].System, map[string]string{"$.cdid": "d"}) || up[0].From != "d" {
		t.Fatalf("Upstream() = %+v, want one message from d with only $.cdid=d", up)
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, tt := range topicTests {
		f.Add(tt.topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		got, err := parseTopic(topic)
		if err != nil || got.kind != kindTelemetry {
			return
		}
		if !strings.HasPrefix(topic, "devices/"+got.device+"/") {
			t.Fatalf("parseTopic(%q) device %q is not the topic's", topic, got.device)
		}
		// What the emulator encodes for delivery decodes to the same bag.
		system, user := splitProperties(got.props)
		enc := encodeProperties(system, user)
		back, err := parseProperties(enc)
		if err != nil {
			t.Fatalf("parseProperties(encodeProperties(%q)) = %v", got.props, err)
		}
		if !maps.Equal(back, got.props) {
			t.Fatalf("round trip of %q: %q, want %q", topic, back, got.props)
		}
		if strings.ContainsAny(enc, "/#+ ") {
			t.Fatalf("encodeProperties(%q) = %q: not a single topic segment", got.props, enc)
		}
	})
}
