package hubemu_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// jsonEq reports whether two JSON texts hold the same value.
func jsonEq(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return string(gb) == string(wb)
}

// twinClient is a module's twin session: response and desired-patch
// subscriptions as the SDKs make them (docs/edge-protocol.md#twin-reconciliation).
type twinClient struct {
	c       paho.Client
	res     <-chan paho.Message
	desired <-chan paho.Message
}

func newTwinClient(t *testing.T, s *hubtest.Server, module string, key []byte, opt func(*paho.ClientOptions)) twinClient {
	c := s.Connect(t, dev, module, key, opt)
	return twinClient{
		c:       c,
		res:     subscribe(t, c, "$iothub/twin/res/#", 1),
		desired: subscribe(t, c, "$iothub/twin/PATCH/properties/desired/#", 1),
	}
}

func (tc twinClient) request(t *testing.T, topic, body string) paho.Message {
	t.Helper()
	wait(t, "publish "+topic, tc.c.Publish(topic, 1, false, body))
	return recv(t, tc.res, "response to "+topic)
}

func TestTwin(t *testing.T) {
	s := start(t, nil)
	tc := newTwinClient(t, s, "a", keyA, nil)

	m := tc.request(t, "$iothub/twin/GET/?$rid=1", "")
	if m.Topic() != "$iothub/twin/res/200/?$rid=1" || !jsonEq(t, m.Payload(), `{"desired":{"$version":1},"reported":{"$version":1}}`) {
		t.Errorf("GET answered %s %s", m.Topic(), m.Payload())
	}

	// Reported patches: 204 without $version (edgeHub, docs/edge-protocol.md#twin-and-methods-over-mqtt), merged.
	m = tc.request(t, "$iothub/twin/PATCH/properties/reported/?$rid=2", `{"interval":5,"status":{"ok":true,"gone":1}}`)
	if m.Topic() != "$iothub/twin/res/204/?$rid=2" || len(m.Payload()) != 0 {
		t.Errorf("reported patch answered %s %q, want $iothub/twin/res/204/?$rid=2 and no body", m.Topic(), m.Payload())
	}
	m = tc.request(t, "$iothub/twin/PATCH/properties/reported/?$rid=3", `{"status":{"gone":null}}`)
	if m.Topic() != "$iothub/twin/res/204/?$rid=3" {
		t.Errorf("second reported patch answered %s", m.Topic())
	}
	tw, err := s.Twin(dev, "a")
	if err != nil {
		t.Fatal(err)
	}
	if tw.ReportedVersion != 3 || !jsonEq(t, tw.Reported, `{"interval":5,"status":{"ok":true}}`) {
		t.Errorf("Twin().Reported = %s version %d, want the merged patches at version 3", tw.Reported, tw.ReportedVersion)
	}

	// Invalid patches: 400, nothing applied.
	for i, body := range []string{
		`{"interval":`,
		`[1,2]`,
		`{"list":[1,2]}`,
		`{"a.b":1}`,
		`{"$x":1}`,
		`{"big":"` + strings.Repeat("x", 33*1024) + `"}`,
		`{"1":{"2":{"3":{"4":{"5":{"6":{"7":{"8":{"9":{"10":{"11":1}}}}}}}}}}}`,
	} {
		rid := string(rune('a' + i))
		m = tc.request(t, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, body)
		if m.Topic() != "$iothub/twin/res/400/?$rid="+rid {
			t.Errorf("reported patch %.40q answered %s, want 400", body, m.Topic())
		}
	}
	if tw2, _ := s.Twin(dev, "a"); tw2.ReportedVersion != 3 {
		t.Errorf("reported version %d after refused patches, want 3", tw2.ReportedVersion)
	}

	// Desired patches are pushed with $version.
	v, err := s.UpdateDesired(dev, "a", json.RawMessage(`{"interval":10,"thresholds":{"hi":80}}`))
	if err != nil || v != 2 {
		t.Fatalf("UpdateDesired = %d, %v; want version 2", v, err)
	}
	m = recv(t, tc.desired, "desired patch")
	if m.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" || !jsonEq(t, m.Payload(), `{"interval":10,"thresholds":{"hi":80},"$version":2}`) {
		t.Errorf("desired push %s %s", m.Topic(), m.Payload())
	}
	if v, err = s.UpdateDesired(dev, "a", json.RawMessage(`{"thresholds":null}`)); err != nil || v != 3 {
		t.Fatalf("UpdateDesired(null) = %d, %v; want version 3", v, err)
	}
	m = recv(t, tc.desired, "desired patch with null")
	if !jsonEq(t, m.Payload(), `{"thresholds":null,"$version":3}`) {
		t.Errorf("desired push %s, want the null kept", m.Payload())
	}
	m = tc.request(t, "$iothub/twin/GET/?$rid=9", "")
	if !jsonEq(t, m.Payload(), `{"desired":{"interval":10,"$version":3},"reported":{"interval":5,"status":{"ok":true},"$version":3}}`) {
		t.Errorf("GET after patches = %s", m.Payload())
	}

	if _, err := s.UpdateDesired(dev, "a", json.RawMessage(`{"x":[1]}`)); !errors.Is(err, hubemu.ErrInvalidTwin) {
		t.Errorf("UpdateDesired(array) = %v, want ErrInvalidTwin", err)
	}
	if _, err := s.UpdateDesired(dev, "nobody", json.RawMessage(`{}`)); !errors.Is(err, hubemu.ErrUnknownIdentity) {
		t.Errorf("UpdateDesired(unknown) = %v, want ErrUnknownIdentity", err)
	}
}

// Desired patches are not queued for a disconnected module: it sees the
// change when it GETs the twin after reconnecting (docs/edge-protocol.md#twin-reconciliation).
func TestUpdateDesiredWhileDisconnected(t *testing.T) {
	s := start(t, nil)
	if _, err := s.UpdateDesired(dev, "a", json.RawMessage(`{"mode":"eco"}`)); err != nil {
		t.Fatal(err)
	}
	tc := newTwinClient(t, s, "a", keyA, nil)
	m := tc.request(t, "$iothub/twin/GET/?$rid=x", "")
	if !jsonEq(t, m.Payload(), `{"desired":{"mode":"eco","$version":2},"reported":{"$version":1}}`) {
		t.Errorf("GET = %s", m.Payload())
	}
	quiet(t, tc.desired, 300*time.Millisecond, "desired patch made while disconnected")
}

// An empty $rid makes edgeHub throw; the emulator closes the connection.
func TestTwinWithoutRIDCloses(t *testing.T) {
	s := start(t, nil)
	watch, lostCh := onLost()
	tc := newTwinClient(t, s, "a", keyA, watch)
	tc.c.Publish("$iothub/twin/GET/?$rid=", 1, false, "")
	lost(t, lostCh, 5*time.Second, "GET without $rid")
}

// Twin responses need the exact $iothub/twin/res/# subscription.
func TestTwinResponseNeedsSubscription(t *testing.T) {
	s := start(t, nil)
	c := s.Connect(t, dev, "a", keyA, nil)
	other := subscribe(t, c, "$iothub/#", 1)
	wait(t, "GET", c.Publish("$iothub/twin/GET/?$rid=1", 1, false, ""))
	quiet(t, other, 300*time.Millisecond, "twin response without $iothub/twin/res/#")
}

func TestMethods(t *testing.T) {
	s := start(t, nil)
	c := s.Connect(t, dev, "a", keyA, nil)
	if _, _, err := s.InvokeMethod(t.Context(), dev, "a", "reboot", nil, time.Second); !errors.Is(err, hubemu.ErrNotConnected) {
		t.Errorf("InvokeMethod before subscribing = %v, want ErrNotConnected", err)
	}
	if _, _, err := s.InvokeMethod(t.Context(), dev, "b", "reboot", nil, time.Second); !errors.Is(err, hubemu.ErrNotConnected) {
		t.Errorf("InvokeMethod on a disconnected module = %v, want ErrNotConnected", err)
	}
	var silent atomic.Bool
	wait(t, "subscribe methods", c.Subscribe("$iothub/methods/POST/#", 1, func(c paho.Client, m paho.Message) {
		if silent.Load() {
			return
		}
		// $iothub/methods/POST/{name}/?$rid={rid}
		rest := strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/")
		name, query, _ := strings.Cut(rest, "/")
		body := `{"method":"` + name + `","got":` + string(m.Payload()) + `}`
		c.Publish("$iothub/methods/res/201/"+query, 1, false, body)
	}))
	status, resp, err := s.InvokeMethod(t.Context(), dev, "a", "echo", json.RawMessage(`{"n":1}`), 5*time.Second)
	if err != nil || status != 201 || !jsonEq(t, resp, `{"method":"echo","got":{"n":1}}`) {
		t.Errorf("InvokeMethod = %d, %s, %v; want 201 and the echo", status, resp, err)
	}
	silent.Store(true)
	begin := time.Now()
	if _, _, err := s.InvokeMethod(t.Context(), dev, "a", "echo", json.RawMessage(`{}`), 500*time.Millisecond); !errors.Is(err, hubemu.ErrMethodTimeout) {
		t.Errorf("unanswered InvokeMethod = %v, want ErrMethodTimeout", err)
	}
	if d := time.Since(begin); d < 450*time.Millisecond || d > 3*time.Second {
		t.Errorf("timeout after %s, want about 500 ms", d)
	}
}

// LoseTwinAnswers processes the next requests and loses their answers:
// a lost reported patch is still applied; later requests are answered.
func TestLoseTwinAnswers(t *testing.T) {
	s := start(t, nil)
	tc := newTwinClient(t, s, "a", keyA, nil)
	s.LoseTwinAnswers(2)
	wait(t, "GET", tc.c.Publish("$iothub/twin/GET/?$rid=1", 1, false, ""))
	wait(t, "reported patch", tc.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=2", 1, false, `{"lost":1}`))
	m := tc.request(t, "$iothub/twin/GET/?$rid=3", "")
	if m.Topic() != "$iothub/twin/res/200/?$rid=3" || !jsonEq(t, m.Payload(), `{"desired":{"$version":1},"reported":{"$version":2,"lost":1}}`) {
		t.Errorf("the answer after two lost ones: %s %s, want rid 3 with the lost patch applied", m.Topic(), m.Payload())
	}
	select {
	case m := <-tc.res:
		t.Errorf("a lost answer came: %s", m.Topic())
	default:
	}
}
