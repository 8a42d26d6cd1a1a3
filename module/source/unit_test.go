package source

import (
	"maps"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/module/twin"
)

func TestMatch(t *testing.T) {
	for _, tt := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a//c", true},
		{"+/+", "/x", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "$SYS/broker", false},
		{"+/broker", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker/load", true},
		{"$share/g/a/+", "a/b", true},
		{"$share/g/a/+", "b/b", false},
		{"$share/g", "g", false},
	} {
		if got := match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want endpoint
		err  bool
	}{
		{url: "tcp://broker", want: endpoint{addr: "broker:1883"}},
		{url: "mqtt://10.0.0.5:1884", want: endpoint{addr: "10.0.0.5:1884"}},
		{url: "ssl://broker", want: endpoint{addr: "broker:8883", tls: true}},
		{url: "mqtts://[::1]:8884/", want: endpoint{addr: "[::1]:8884", tls: true}},
		{url: "ws://broker", err: true},
		{url: "broker:1883", err: true},
		{url: "mqtt://user:pw@broker", err: true},
		{url: "mqtt://broker/path", err: true},
		{url: "mqtt://", err: true},
	} {
		got, err := parseURL(tt.url)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseURL(%q) = %+v, %v; want %+v, error %v", tt.url, got, err, tt.want, tt.err)
		}
	}
}

// fakeMessage is an mqtt.Message as paho delivers it.
type fakeMessage struct {
	topic    string
	payload  []byte
	retained bool
	qos      byte
	acked    bool
}

func (m *fakeMessage) Duplicate() bool   { return false }
func (m *fakeMessage) Qos() byte         { return m.qos }
func (m *fakeMessage) Retained() bool    { return m.retained }
func (m *fakeMessage) Topic() string     { return m.topic }
func (m *fakeMessage) MessageID() uint16 { return 1 }
func (m *fakeMessage) Payload() []byte   { return m.payload }
func (m *fakeMessage) Ack()              { m.acked = true }

func TestMessage(t *testing.T) {
	m := NewManager(&memQueue{}, Config{Output: "telemetry"})
	cfg := twin.Source{Name: "gw", URL: "tcp://h", Topics: []twin.Topic{
		{Filter: "json/#", Output: "readings", Properties: map[string]string{"line": "2", PropRetained: "configured"}},
		{Filter: "#"},
	}}
	s := newSource(m, cfg, nil)
	for _, tt := range []struct {
		name            string
		msg             fakeMessage
		output, ct, enc string
		props           map[string]string
	}{
		{"json object", fakeMessage{topic: "json/a", payload: []byte(`{"t":21.5}`)}, "readings", "application/json", "utf-8",
			map[string]string{"line": "2", PropTopic: "json/a"}},
		{"json number", fakeMessage{topic: "x", payload: []byte(`42`)}, "telemetry", "application/json", "utf-8",
			map[string]string{PropTopic: "x"}},
		{"text", fakeMessage{topic: "x", payload: []byte(`running`)}, "telemetry", "", "", map[string]string{PropTopic: "x"}},
		{"empty", fakeMessage{topic: "x"}, "telemetry", "", "", map[string]string{PropTopic: "x"}},
		{"json with invalid utf-8", fakeMessage{topic: "x", payload: []byte("\"\xff\"")}, "telemetry", "", "", map[string]string{PropTopic: "x"}},
		{"retained", fakeMessage{topic: "json/r", payload: []byte(`1`), retained: true}, "readings", "application/json", "utf-8",
			map[string]string{"line": "2", PropTopic: "json/r", PropRetained: "true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := s.route(tt.msg.topic)
			if i < 0 {
				t.Fatalf("route(%q) = %d", tt.msg.topic, i)
			}
			got := s.message(delivery{msg: &tt.msg, topic: &s.cfg.Topics[i]})
			if got.Output != tt.output || got.ContentType != tt.ct || got.ContentEncoding != tt.enc || !maps.Equal(got.Properties, tt.props) {
				t.Errorf("message(%s) = output %q, content %q/%q, properties %v; want %q, %q/%q, %v",
					tt.msg.payload, got.Output, got.ContentType, got.ContentEncoding, got.Properties, tt.output, tt.ct, tt.enc, tt.props)
			}
			if got.Source != "mqtt:gw" || string(got.Body) != string(tt.msg.payload) {
				t.Errorf("Source %q, Body %q", got.Source, got.Body)
			}
		})
	}
	if cfg.Topics[0].Properties[PropRetained] != "configured" {
		t.Error("message changed the configured properties")
	}
}

// A message takes the drain rank of its topic's priority, else of its
// source's.
func TestMessageRank(t *testing.T) {
	m := NewManager(&memQueue{}, Config{Output: "telemetry"})
	zero, five := 0, 5
	cfg := twin.Source{Name: "gw", URL: "tcp://h", Priority: &five, Topics: []twin.Topic{
		{Filter: "alarm/#", Priority: &zero},
		{Filter: "#"},
	}}
	s := newSource(m, cfg, nil)
	for _, tt := range []struct {
		topic string
		want  uint8
	}{{"alarm/1", twin.RankOf(&zero)}, {"data/1", twin.RankOf(&five)}} {
		msg := fakeMessage{topic: tt.topic, payload: []byte("1")}
		if got := s.message(delivery{msg: &msg, topic: &s.cfg.Topics[s.route(tt.topic)]}); got.Rank != tt.want {
			t.Errorf("message on %s: Rank %d, want %d", tt.topic, got.Rank, tt.want)
		}
	}
}

func TestClientID(t *testing.T) {
	if a, b := clientIDSuffix("d1/relay"), clientIDSuffix("d1/relay"); a != b || len(a) != 8 {
		t.Errorf("the same module gave %q and %q, want one 8-digit suffix", a, b)
	}
	if a, b := clientIDSuffix("d1/relay"), clientIDSuffix("d2/relay"); a == b {
		t.Errorf("two devices share the suffix %q", a)
	}
	if a, b := clientIDSuffix(""), clientIDSuffix(""); a == b {
		t.Errorf("without an identity the suffix %q repeats", a)
	}
	s := newSource(NewManager(&memQueue{}, Config{Output: "t", Identity: "d1/relay"}), twin.Source{Name: "plc", URL: "tcp://h"}, nil)
	if want := "edge-relay-plc-" + clientIDSuffix("d1/relay"); s.clientID != want {
		t.Errorf("client ID %q, want %q", s.clientID, want)
	}
}

// A reading costs the relay few allocations on its way into the queue:
// message builds the queue message, and the properties of a topic seen
// before are shared, not built again. Two: the Message and its $.mid.
func TestMessageAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m := NewManager(&memQueue{}, Config{Output: "telemetry"})
	s := newSource(m, twin.Source{Name: "gw", URL: "tcp://h", Topics: []twin.Topic{
		{Filter: "#", Properties: map[string]string{"line": "2"}},
	}}, nil)
	for _, body := range []string{strings.Repeat(".", 256), `{"t":21.5,"unit":"C"}`} {
		msg := &fakeMessage{topic: "plant/line1", payload: []byte(body), qos: 1}
		d := delivery{msg: msg, topic: &s.cfg.Topics[0]}
		if got := testing.AllocsPerRun(100, func() { s.message(d) }); got > 2 {
			t.Errorf("message(%.10q…) makes %v allocations, want at most 2", body, got)
		}
	}
	if got := testing.AllocsPerRun(100, func() { digestOf("plant/line1", []byte("reading")) }); got > 0 {
		t.Errorf("digestOf makes %v allocations, want none", got)
	}
}
