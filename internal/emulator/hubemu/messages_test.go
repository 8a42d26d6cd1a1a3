package hubemu_test

import (
	"errors"
	"maps"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

// Telemetry reaches $upstream with its property bag decoded, and is
// recorded before the PUBACK (docs/edge-protocol.md#telemetry-topics-and-properties, #edgehub-delivery).
func TestTelemetryUpstream(t *testing.T) {
	s := start(t, nil)
	c := s.Connect(t, dev, "a", keyA, nil)
	topic := "devices/edge1/modules/a/messages/events/%24.on=up&%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&site=plant%201&flag&a%2Bb=c%2Bd"
	wait(t, "publish", c.Publish(topic, 1, false, `{"t":1}`))
	// No waiting: the PUBACK came after the message was recorded.
	up := s.Upstream()
	if len(up) != 1 {
		t.Fatalf("Upstream() holds %d messages right after the PUBACK, want 1", len(up))
	}
	m := up[0]
	wantSys := map[string]string{"$.on": "up", "$.mid": "m-1", "$.ct": "application/json", "$.ce": "utf-8", "$.cdid": dev, "$.cmid": "a"}
	wantProps := map[string]string{"site": "plant 1", "flag": "", "a+b": "c+d"}
	if string(m.Body) != `{"t":1}` || m.From != "edge1/a" || m.Output != "up" || !maps.Equal(m.System, wantSys) || !maps.Equal(m.Properties, wantProps) {
		t.Errorf("upstream message = %+v, want body {\"t\":1} from edge1/a output up, system %v, properties %v", m, wantSys, wantProps)
	}
	if m.Received.IsZero() {
		t.Error("Received is zero")
	}
	// Metered as IoT Hub would: the body (7), the forwarded system
	// values (m-1, application/json, utf-8: 24), the application names
	// and values (site, plant 1, flag, a+b, c+d: 21); not $.on.
	if m.Billed != 52 || m.Units != 1 {
		t.Errorf("upstream message billed %d bytes in %d units, want 52 in 1", m.Billed, m.Units)
	}

	// The other inbound templates, QoS 0 too.
	for i, topic := range []string{
		"devices/edge1/modules/a/messages/events/%24.on=up",
		"devices/edge1/modules/a/messages/events/%24.on=up/",
	} {
		wait(t, "publish "+topic, c.Publish(topic, byte(i%2), false, topic))
	}
	// Without $.on the output route does not match: dropped, acknowledged.
	wait(t, "publish without output", c.Publish("devices/edge1/modules/a/messages/events", 1, false, "nowhere"))
	wait(t, "publish without output", c.Publish("devices/edge1/modules/a/messages/events/", 1, false, "nowhere"))
	up, err := s.WaitUpstream(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(up) != 3 {
		t.Errorf("Upstream() holds %d messages, want 3 (the unrouted ones dropped)", len(up))
	}

}

// A device publishes on IoT Hub's device topic; /messages/* routes it.
func TestDeviceTelemetry(t *testing.T) {
	s := start(t, func(c *hubemu.Config) {
		c.Routes = map[string]string{"all": "FROM /messages/* INTO $upstream"}
	})
	d := s.Connect(t, dev, "", keyDev, nil)
	wait(t, "device publish", d.Publish("devices/edge1/messages/events/k=v", 1, false, "from device"))
	up := s.Upstream()
	if len(up) != 1 || up[0].From != dev || !maps.Equal(up[0].System, map[string]string{"$.cdid": dev}) || up[0].Properties["k"] != "v" {
		t.Errorf("Upstream() = %+v, want one message from %s with k=v and only $.cdid", up, dev)
	}
}

// A module output routed to another module's input arrives with $.cdid and
// $.cmid, without $.on (docs/edge-protocol.md#telemetry-topics-and-properties).
func TestRouteToModuleInput(t *testing.T) {
	s := start(t, nil)
	a := s.Connect(t, dev, "a", keyA, nil)
	b := s.Connect(t, dev, "b", keyB, nil)
	in := subscribe(t, b, "devices/edge1/modules/b/#", 1)
	wait(t, "publish", a.Publish("devices/edge1/modules/a/messages/events/%24.on=toB&%24.mid=42&site=plant%201", 1, false, "hello"))
	m := recv(t, in, "input message")
	want := "devices/edge1/modules/b/inputs/in1/%24.mid=42&%24.cdid=edge1&%24.cmid=a&site=plant%201"
	if m.Topic() != want || string(m.Payload()) != "hello" || m.Qos() != 1 {
		t.Errorf("delivered %s %q QoS %d, want %s \"hello\" QoS 1", m.Topic(), m.Payload(), m.Qos(), want)
	}
	if n := len(s.Upstream()); n != 0 {
		t.Errorf("Upstream() holds %d messages, want 0", n)
	}
}

// Python subscribes devices/{d}/modules/{m}/inputs/#, which counts too; a
// QoS 0 subscription gets QoS 0 deliveries.
func TestInputSubscriptionForms(t *testing.T) {
	s := start(t, nil)
	b := s.Connect(t, dev, "b", keyB, nil)
	in := subscribe(t, b, "devices/edge1/modules/b/inputs/#", 0)
	if err := s.SendToInput(t.Context(), dev, "b", "in 2", hubemu.Message{Body: []byte("x"), Properties: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, in, "input message")
	if m.Topic() != "devices/edge1/modules/b/inputs/in%202/k=v" || m.Qos() != 0 {
		t.Errorf("delivered %s QoS %d, want devices/edge1/modules/b/inputs/in%%202/k=v QoS 0", m.Topic(), m.Qos())
	}
}

// Input delivery waits for the PUBACK, one message at a time, redelivers
// after the acknowledgement timeout, and keeps messages while the module is
// away (docs/edge-protocol.md#edgehub-delivery).
func TestInputDelivery(t *testing.T) {
	s := start(t, nil) // MessageAckTimeout 500 ms
	send := func(body string) {
		t.Helper()
		if err := s.SendToInput(t.Context(), dev, "b", "in1", hubemu.Message{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// Queued while b is not connected.
	send("one")
	send("two")
	manual := func(o *paho.ClientOptions) { o.SetAutoAckDisabled(true) }
	b := s.Connect(t, dev, "b", keyB, manual)
	in := subscribe(t, b, "devices/edge1/modules/b/#", 1)

	first := recv(t, in, "first delivery")
	if string(first.Payload()) != "one" {
		t.Fatalf("first delivery %q, want one", first.Payload())
	}
	// Not acknowledged: nothing else in flight, then "one" again.
	again := recv(t, in, "redelivery")
	if string(again.Payload()) != "one" {
		t.Fatalf("after the ack timeout got %q, want one redelivered", again.Payload())
	}
	again.Ack()
	second := recv(t, in, "second message")
	if string(second.Payload()) != "two" {
		t.Fatalf("after the PUBACK got %q, want two", second.Payload())
	}

	// The module goes away with "two" unacknowledged and comes back: it is
	// delivered again.
	b.Disconnect(0)
	time.Sleep(100 * time.Millisecond)
	b2 := s.Connect(t, dev, "b", keyB, nil)
	in2 := subscribe(t, b2, "devices/edge1/modules/b/#", 1)
	back := recv(t, in2, "delivery after reconnecting")
	if string(back.Payload()) != "two" {
		t.Fatalf("after reconnecting got %q, want two", back.Payload())
	}
	// Acknowledged (auto-ack): no more deliveries.
	quiet(t, in2, 2*time.Second, "after the last PUBACK")
}

// Unsubscribed modules get nothing; the message waits for the subscription.
func TestInputWaitsForSubscription(t *testing.T) {
	s := start(t, nil)
	b := s.Connect(t, dev, "b", keyB, nil)
	twin := subscribe(t, b, "$iothub/twin/res/#", 1)
	if err := s.SendToInput(t.Context(), dev, "b", "in1", hubemu.Message{Body: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	quiet(t, twin, 300*time.Millisecond, "before subscribing to inputs")
	in := subscribe(t, b, "devices/edge1/modules/b/#", 1)
	if m := recv(t, in, "after subscribing"); string(m.Payload()) != "late" {
		t.Errorf("got %q, want late", m.Payload())
	}
}

// Messages older than MessageTTL are dropped rather than delivered.
func TestInputTTL(t *testing.T) {
	clk := testclock.New(time.Now())
	s := start(t, func(c *hubemu.Config) {
		c.Now = clk.Now
		c.MessageTTL = time.Minute
	})
	if err := s.SendToInput(t.Context(), dev, "b", "in1", hubemu.Message{Body: []byte("stale")}); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	if err := s.SendToInput(t.Context(), dev, "b", "in1", hubemu.Message{Body: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	b := s.Connect(t, dev, "b", keyB, nil)
	in := subscribe(t, b, "devices/edge1/modules/b/#", 1)
	if m := recv(t, in, "delivery"); string(m.Payload()) != "fresh" {
		t.Errorf("got %q, want fresh (stale expired)", m.Payload())
	}
}

func TestSendToInputErrors(t *testing.T) {
	s := start(t, nil)
	if err := s.SendToInput(t.Context(), dev, "nobody", "in1", hubemu.Message{}); !errors.Is(err, hubemu.ErrUnknownIdentity) {
		t.Errorf("SendToInput(unknown module) = %v, want ErrUnknownIdentity", err)
	}
	if err := s.SendToInput(t.Context(), dev, "b", "a/b", hubemu.Message{}); !errors.Is(err, hubemu.ErrInvalidArgument) {
		t.Errorf("SendToInput(input with '/') = %v, want ErrInvalidArgument", err)
	}
}

// With CleanSession 0 the subscriptions outlive the connection, as edgeHub
// restores them (docs/edge-protocol.md#mqtt-to-edgehub): input messages queued meanwhile are
// delivered on reconnecting without a new SUBSCRIBE.
func TestPersistentSessionKeepsSubscriptions(t *testing.T) {
	s := start(t, nil)
	got := make(chan paho.Message, 10)
	persistent := func(o *paho.ClientOptions) {
		o.SetCleanSession(false).SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m })
	}
	b := s.Connect(t, dev, "b", keyB, persistent)
	subscribe(t, b, "devices/edge1/modules/b/inputs/#", 1)
	b.Disconnect(0)
	time.Sleep(100 * time.Millisecond)
	if err := s.SendToInput(t.Context(), dev, "b", "in1", hubemu.Message{Body: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	s.Connect(t, dev, "b", keyB, persistent)
	if m := recv(t, got, "delivery to the restored subscription"); string(m.Payload()) != "kept" {
		t.Errorf("got %q, want kept", m.Payload())
	}
}
