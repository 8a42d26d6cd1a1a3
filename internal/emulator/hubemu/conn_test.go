package hubemu_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

func TestConnectAccepted(t *testing.T) {
	s := start(t, nil)
	s.Connect(t, dev, "a", keyA, nil)
	if !s.Connected(dev, "a") {
		t.Error("Connected(a) = false after connecting")
	}
	if s.Connected(dev, "b") {
		t.Error("Connected(b) = true, never connected")
	}
	// The device identity, as on IoT Hub's own endpoint.
	s.Connect(t, dev, "", keyDev, nil)
	if !s.Connected(dev, "") {
		t.Error("Connected(device) = false after connecting")
	}
}

// CONNECT is checked as edgeHub checks it (docs/edge-protocol.md#mqtt-to-edgehub, #sas-tokens-for-edgehub).
func TestConnectCodes(t *testing.T) {
	s := start(t, nil)
	now := time.Now()
	modRes := func(host string) string { return sas.ModuleResource(host, dev, "a") }
	tests := []struct {
		name string
		opts func() *paho.ClientOptions
		want byte
	}{
		{"gateway host audience", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, modRes(s.GatewayHostName()), keyA, now.Add(time.Hour)))
		}, 0},
		{"audience host case-insensitive", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, modRes(strings.ToUpper(s.HubHostName())), keyA, now.Add(time.Hour)))
		}, 0},
		{"expired within the 5 min skew", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, modRes(s.HubHostName()), keyA, now.Add(-4*time.Minute)))
		}, 0},
		{"username form without ?", func() *paho.ClientOptions {
			o := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour))
			return o.SetUsername(s.HubHostName() + "/" + dev + "/a/api-version=2018-06-30")
		}, 0},
		{"bad signature", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyB, time.Hour))
		}, 5},
		{"expired beyond the skew", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, modRes(s.HubHostName()), keyA, now.Add(-6*time.Minute)))
		}, 5},
		{"audience of another module", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, sas.ModuleResource(s.HubHostName(), dev, "b"), keyA, now.Add(time.Hour)))
		}, 5},
		{"audience of another host", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, modRes("other-hub.azure-devices.net"), keyA, now.Add(time.Hour)))
		}, 5},
		// edgeHub takes a module's token signed with its device's key, for
		// the device's audience or the module's (allowDeviceAuthForModule).
		{"device token for a module", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "", keyDev, time.Hour))
		}, 0},
		{"module audience, device key", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyDev, time.Hour))
		}, 0},
		{"another device's audience, device key", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", hubtest.Token(t, sas.DeviceResource(s.HubHostName(), "edge2"), keyDev, now.Add(time.Hour)))
		}, 5},
		{"device audience, another module's key", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "", keyB, time.Hour))
		}, 5},
		{"client id differs from username", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour)).SetClientID(dev + "/b")
		}, 5},
		{"client id differs in case", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour)).SetClientID("EDGE1/a")
		}, 5},
		{"unknown identity", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "zzz", s.ModuleToken(t, dev, "zzz", keyA, time.Hour))
		}, 5},
		{"not a SAS token", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", "secret")
		}, 5},
		{"no password", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", "").SetPassword("")
		}, 5},
		{"missing api-version", func() *paho.ClientOptions {
			o := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour))
			return o.SetUsername(s.HubHostName() + "/" + dev + "/a/?DeviceClientType=x")
		}, 3},
		{"empty api-version", func() *paho.ClientOptions {
			o := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour))
			return o.SetUsername(s.HubHostName() + "/" + dev + "/a/?api-version=")
		}, 3},
		{"username with too many segments", func() *paho.ClientOptions {
			o := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour))
			return o.SetUsername(s.HubHostName() + "/x/" + dev + "/a/?api-version=1")
		}, 3},
		{"MQTT 3.1", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour)).SetProtocolVersion(3)
		}, 1},
		// Mosquitto's bridges try the bridge bit first (try_private) and
		// fall back to plain 3.1.1 only on return code 1.
		{"MQTT 3.1.1 with the bridge bit (0x84)", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour)).SetProtocolVersion(0x84)
		}, 1},
		{"MQTT 3.1 with the bridge bit (0x83)", func() *paho.ClientOptions {
			return s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour)).SetProtocolVersion(0x83)
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hubtest.ConnectCode(tt.opts())
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			if got != tt.want {
				t.Errorf("CONNACK return code = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRefuseConnects(t *testing.T) {
	s := start(t, nil)
	s.RefuseConnects(time.Second)
	opts := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, time.Hour))
	if rc, err := hubtest.ConnectCode(opts); err != nil || rc != 3 {
		t.Fatalf("connect while refusing: code %d, %v; want 3", rc, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if rc, err := hubtest.ConnectCode(opts); err != nil || rc != 0 {
		t.Fatalf("connect after the refusal: code %d, %v; want 0", rc, err)
	}
}

func TestSecondConnectionKicksFirst(t *testing.T) {
	s := start(t, nil)
	watch, lostCh := onLost()
	s.Connect(t, dev, "a", keyA, watch)
	second := s.Connect(t, dev, "a", keyA, nil)
	lost(t, lostCh, 5*time.Second, "first connection")
	wait(t, "publish on the second connection", second.Publish("devices/edge1/modules/a/messages/events/%24.on=up", 1, false, "x"))
	if !s.Connected(dev, "a") {
		t.Error("Connected(a) = false with the second connection open")
	}
}

// A connection whose token expired (past the 5 min skew) is closed at the
// next re-authentication (docs/edge-protocol.md#sas-tokens-for-edgehub).
func TestReauthClosesExpired(t *testing.T) {
	clk := testclock.New(time.Now())
	s := start(t, func(c *hubemu.Config) {
		c.Now = clk.Now
		c.ReauthInterval = 500 * time.Millisecond
	})
	watchShort, lostShort := onLost()
	short := s.ClientOptions(dev, "a", s.ModuleToken(t, dev, "a", keyA, 2*time.Second))
	watchShort(short)
	cs := paho.NewClient(short)
	wait(t, "connect with a 2 s token", cs.Connect())
	defer cs.Disconnect(0)
	watchLong, lostLong := onLost()
	s.Connect(t, dev, "b", keyB, watchLong)

	time.Sleep(1200 * time.Millisecond)
	notLost(t, lostShort, "token still valid")
	// se + 5 min is still accepted.
	clk.Add(5 * time.Minute)
	time.Sleep(1200 * time.Millisecond)
	notLost(t, lostShort, "token within the skew")
	clk.Add(3 * time.Second)
	lost(t, lostShort, 3*time.Second, "expired token")
	notLost(t, lostLong, "one-hour token")
	if s.Connected(dev, "a") {
		t.Error("Connected(a) = true after re-authentication closed it")
	}
}

// A QoS 2 PUBLISH is processed, then the connection is closed
// (docs/edge-protocol.md#limits).
func TestQoS2PublishCloses(t *testing.T) {
	s := start(t, nil)
	watch, lostCh := onLost()
	c := s.Connect(t, dev, "a", keyA, watch)
	c.Publish("devices/edge1/modules/a/messages/events/%24.on=up", 2, false, "qos2")
	lost(t, lostCh, 5*time.Second, "QoS 2 publish")
	if up := s.Upstream(); len(up) != 1 || string(up[0].Body) != "qos2" {
		t.Errorf("Upstream() = %v, want the QoS 2 message processed", up)
	}
}

// Packets with a remaining length over 262144 bytes close the connection
// (docs/edge-protocol.md#limits); one of exactly that size is read.
func TestPacketSizeLimit(t *testing.T) {
	s := start(t, func(c *hubemu.Config) {
		c.Routes = map[string]string{"all": "FROM /messages/* INTO $upstream"}
	})
	topic := "devices/edge1/modules/a/messages/events/"
	// remaining length = 2 + topic + 2 (packet id) + payload
	fits := bytes.Repeat([]byte("x"), 256*1024-4-len(topic))
	watch, lostCh := onLost()
	c := s.Connect(t, dev, "a", keyA, watch)
	wait(t, "publish 262144 bytes", c.Publish(topic, 1, false, fits))
	notLost(t, lostCh, "262144-byte packet")
	if up := s.Upstream(); len(up) != 1 {
		t.Fatalf("Upstream() holds %d messages, want the 262144-byte packet", len(up))
	}
	c.Publish(topic, 1, false, append(fits, 'y'))
	lost(t, lostCh, 5*time.Second, "262145-byte packet")
	if up := s.Upstream(); len(up) != 1 {
		t.Errorf("Upstream() holds %d messages, want the oversize one dropped", len(up))
	}
}

func TestDropAll(t *testing.T) {
	s := start(t, nil)
	watchA, lostA := onLost()
	watchB, lostB := onLost()
	s.Connect(t, dev, "a", keyA, watchA)
	s.Connect(t, dev, "b", keyB, watchB)
	s.DropAll()
	lost(t, lostA, 5*time.Second, "a after DropAll")
	lost(t, lostB, 5*time.Second, "b after DropAll")
	if s.Connected(dev, "a") || s.Connected(dev, "b") {
		t.Error("Connected = true after DropAll")
	}
	// Clients can come back.
	s.Connect(t, dev, "a", keyA, nil)
}

// StallAcks holds the PUBACK, and the message is recorded just before it.
func TestStallAcks(t *testing.T) {
	s := start(t, nil)
	c := s.Connect(t, dev, "a", keyA, nil)
	s.StallAcks(700 * time.Millisecond)
	begin := time.Now()
	tok := c.Publish("devices/edge1/modules/a/messages/events/%24.on=up", 1, false, "slow")
	if tok.WaitTimeout(400 * time.Millisecond) {
		t.Fatalf("PUBACK after %s, want it held for 700 ms", time.Since(begin))
	}
	if n := len(s.Upstream()); n != 0 {
		t.Errorf("Upstream() holds %d messages while the PUBACK is held, want 0", n)
	}
	wait(t, "stalled publish", tok)
	if d := time.Since(begin); d < 650*time.Millisecond {
		t.Errorf("PUBACK after %s, want at least 700 ms", d)
	}
	if n := len(s.Upstream()); n != 1 {
		t.Errorf("Upstream() holds %d messages after the PUBACK, want 1", n)
	}
}

// Clients can only subscribe to and publish on their own topics.
func TestACL(t *testing.T) {
	s := start(t, nil)
	watch, lostCh := onLost()
	c := s.Connect(t, dev, "a", keyA, watch)
	for _, filter := range []string{"devices/edge1/modules/b/#", "devices/+/modules/a/#", "#", "$SYS/#", "devices/edge1/messages/devicebound/#"} {
		tok := c.Subscribe(filter, 1, func(paho.Client, paho.Message) {})
		wait(t, "subscribe "+filter, tok)
		if got := tok.(*paho.SubscribeToken).Result()[filter]; got != 0x80 {
			t.Errorf("SUBACK for %q = %#x, want 0x80", filter, got)
		}
	}
	for _, filter := range []string{"devices/edge1/modules/a/#", "$iothub/methods/POST/#"} {
		tok := c.Subscribe(filter, 2, func(paho.Client, paho.Message) {})
		wait(t, "subscribe "+filter, tok)
		if got := tok.(*paho.SubscribeToken).Result()[filter]; got != 1 {
			t.Errorf("SUBACK for %q = %#x, want QoS 1 granted", filter, got)
		}
	}
	// Unknown topics of its own are dropped but acknowledged.
	wait(t, "publish to an unknown topic", c.Publish("devices/edge1/modules/a/whatever", 1, false, "x"))
	wait(t, "publish to a non-identity topic", c.Publish("foo/bar", 1, false, "x"))
	notLost(t, lostCh, "unknown topics")
	c.Publish("devices/edge1/modules/b/messages/events/", 1, false, "spoof")
	lost(t, lostCh, 5*time.Second, "publish as another module")
	if n := len(s.Upstream()); n != 0 {
		t.Errorf("Upstream() holds %d messages, want the spoofed one dropped", n)
	}
}
