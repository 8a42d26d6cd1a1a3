package hubemu_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
)

// A QoS 1 PUBLISH to a topic no template matches, $SYS/... included
// (Mosquitto's bridge notifications), is dropped but acknowledged and
// logged, as edgeHub does (docs/edge-protocol.md#limits); the connection
// stays open.
func TestPublishToSysAcknowledged(t *testing.T) {
	var log syncbuf.Buffer
	s := start(t, func(c *hubemu.Config) { c.Log = zerolog.New(&log) })
	opt, lostCh := onLost()
	c := s.Connect(t, dev, "a", keyA, opt)
	for _, topic := range []string{"$SYS/broker/connection/edge1/state", "$sys/x", "devices/edge1/modules/a/unknown"} {
		wait(t, "publish to "+topic, c.Publish(topic, 1, true, "1"))
		if !strings.Contains(log.String(), topic) {
			t.Errorf("nothing logged of the PUBLISH to %s:\n%s", topic, log.String())
		}
	}
	wait(t, "publish telemetry", c.Publish("devices/edge1/modules/a/messages/events/%24.on=up", 1, false, "after"))
	notLost(t, lostCh, "after publishes to unknown topics")
	if up := s.Upstream(); len(up) != 1 || string(up[0].Body) != "after" {
		t.Errorf("Upstream() = %+v, want only the telemetry", up)
	}
}

// A topic name with a wildcard breaks MQTT ([MQTT-3.3.2-2]): the
// connection is closed, not the message silently ignored.
func TestPublishWildcardClosesConnection(t *testing.T) {
	var log syncbuf.Buffer
	s := start(t, func(c *hubemu.Config) { c.Log = zerolog.New(&log) })
	for _, topic := range []string{"devices/edge1/modules/a/messages/events/+", "devices/edge1/modules/a/messages/events/%24.on=up#", "$SYS/+/x", "devices/edge1/modules/a/messages/events/a+b"} {
		opt, lostCh := onLost()
		c := s.Connect(t, dev, "a", keyA, opt)
		c.Publish(topic, 1, false, "x")
		lost(t, lostCh, 5*time.Second, "publish to "+topic)
		if !strings.Contains(log.String(), "wildcard in the PUBLISH topic "+topic) {
			t.Errorf("closing for %s not logged with its reason:\n%s", topic, log.String())
		}
	}
	if up := s.Upstream(); len(up) != 0 {
		t.Errorf("Upstream() = %+v, want nothing", up)
	}
}

// Telemetry with more than one level after events/ matches none of
// edgeHub's templates. Acknowledging and dropping it would lose it
// unseen, so the emulator closes the connection (docs/edge-protocol.md#limits).
func TestTelemetryExtraLevelsClosesConnection(t *testing.T) {
	s := start(t, func(c *hubemu.Config) {
		c.Routes = map[string]string{"all": "FROM /messages/* INTO $upstream"}
	})
	for _, tc := range []struct{ module, topic string }{
		{"a", "devices/edge1/modules/a/messages/events/%24.on=up/b"},
		{"a", "devices/edge1/modules/a/messages/events/a/b/"},
		{"", "devices/edge1/messages/events/a/b"},
	} {
		opt, lostCh := onLost()
		key := keyA
		if tc.module == "" {
			key = keyDev
		}
		c := s.Connect(t, dev, tc.module, key, opt)
		tok := c.Publish(tc.topic, 1, false, "x")
		lost(t, lostCh, 5*time.Second, "publish to "+tc.topic)
		if tok.WaitTimeout(time.Second) && tok.Error() == nil {
			t.Errorf("PUBLISH to %s acknowledged", tc.topic)
		}
	}
	if up := s.Upstream(); len(up) != 0 {
		t.Errorf("Upstream() = %+v, want nothing", up)
	}
}

// IoT Hub does not keep retained messages: it passes them on with the
// application property mqtt-retain=true.
func TestRetainedTelemetryMarked(t *testing.T) {
	s := start(t, nil)
	c := s.Connect(t, dev, "a", keyA, nil)
	wait(t, "publish retained", c.Publish("devices/edge1/modules/a/messages/events/%24.on=up&k=v", 1, true, "retained"))
	wait(t, "publish", c.Publish("devices/edge1/modules/a/messages/events/%24.on=up&k=v", 1, false, "plain"))
	up := s.Upstream()
	if len(up) != 2 {
		t.Fatalf("Upstream() holds %d messages, want 2", len(up))
	}
	if got := up[0].Properties; got["mqtt-retain"] != "true" || got["k"] != "v" {
		t.Errorf("retained message's properties = %v, want mqtt-retain=true and k=v", got)
	}
	if _, ok := up[1].Properties["mqtt-retain"]; ok {
		t.Errorf("plain message's properties = %v, want no mqtt-retain", up[1].Properties)
	}
}
