package edgehub

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

// Billed is what IoT Hub meters, as the emulator meters it: body, system
// property values that reach IoT Hub, application names and values.
func TestBilled(t *testing.T) {
	for _, tc := range []struct {
		m    Message
		want int
	}{
		{Message{}, 0},
		{Message{Body: make([]byte, 4096)}, 4096},
		{Message{Body: []byte("{}"), ID: "abc", CorrelationID: "c", ContentType: "application/json", ContentEncoding: "utf-8"}, 2 + 3 + 1 + 16 + 5},
		{Message{Body: []byte("x"), Properties: map[string]string{"mqtt-topic": "plant/a", "line": "3"}}, 1 + 10 + 7 + 4 + 1},
		// edgeHub keeps $.exp; counted anyway, as a device's might be.
		{Message{Expiry: time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)}, len("2026-12-07T22:00:00Z")},
	} {
		if got := Billed(&tc.m); got != tc.want {
			t.Errorf("Billed(%+v) = %d, want %d", tc.m, got, tc.want)
		}
	}
}

// Each mode sends the properties that carry information there, checked
// on the wire at the emulator: $.on only where edgeHub routes on it (a
// module), never to IoT Hub straight (a device); $.mid always; $.ct and
// $.ce only when set. What the emulator meters matches Billed.
func TestPropertiesPerMode(t *testing.T) {
	devKey := []byte("device-key-0123456789abcdef012345")
	hub := hubtest.Start(t, hubemu.Config{
		Key: hubtest.Keys(map[string][]byte{"edge1/relay": moduleKey, "plc7": devKey}),
		Routes: map[string]string{
			"relayUp": "FROM /messages/modules/relay/outputs/* INTO $upstream",
			"devices": "FROM /messages/* INTO $upstream",
		},
	})
	module := start(t, hub, Config{})
	device := start(t, hub, Config{Identity: Identity{HubHostName: hub.HubHostName(), DeviceID: "plc7", Host: hub.HubHostName(), Address: hub.Addr}, Signer: sas.Key(devKey)})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	json := &Message{ID: "j1", Body: []byte(`{"v":1}`), ContentType: "application/json", ContentEncoding: "utf-8", Properties: map[string]string{"mqtt-topic": "plant/a"}}
	raw := &Message{ID: "r1", Body: []byte{0xff, 0}}
	for _, m := range []*Message{json, raw} {
		if err := module.Publish(ctx, "telemetry", m); err != nil {
			t.Fatal(err)
		}
		d := *m
		d.ID = "d" + m.ID
		if err := device.Publish(ctx, "telemetry", &d); err != nil {
			t.Fatal(err)
		}
	}
	up, err := hub.WaitUpstream(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"j1":  {"$.on", "$.mid", "$.ct", "$.ce"},
		"r1":  {"$.on", "$.mid"},
		"dj1": {"$.mid", "$.ct", "$.ce"},
		"dr1": {"$.mid"},
	}
	for _, m := range up {
		id := m.System["$.mid"]
		sent := maps.Clone(m.System)
		delete(sent, "$.cdid") // the emulator stamps the sender
		delete(sent, "$.cmid")
		var keys []string
		for _, k := range want[id] {
			if _, ok := sent[k]; ok {
				keys = append(keys, k)
				delete(sent, k)
			} else {
				t.Errorf("%s: no %s on the wire; got %v", id, k, m.System)
			}
		}
		if len(sent) > 0 {
			t.Errorf("%s: sent %v beyond %v", id, sent, want[id])
		}
		src := json
		if strings.HasSuffix(id, "r1") {
			src = raw
		}
		b := *src
		b.ID = id
		if m.Billed != Billed(&b) {
			t.Errorf("%s: the emulator meters %d bytes, Billed says %d", id, m.Billed, Billed(&b))
		}
	}
}
