package hubemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/mosquittotest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
)

// A stock Mosquitto bridge reaches the emulator as a device: it first
// connects with the bridge bit (try_private, protocol level 0x84) and
// falls back to 3.1.1 on return code 1, then publishes its QoS 1
// notification to $SYS/broker/connection/..., which is dropped but
// acknowledged, and the plant's messages arrive.
func TestMosquittoBridge(t *testing.T) {
	var log syncbuf.Buffer
	s := start(t, func(c *hubemu.Config) {
		c.Log = zerolog.New(&log)
		c.Routes = map[string]string{"all": "FROM /messages/* INTO $upstream"}
	})
	ca := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(ca, s.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Extra: []string{
		"connection hub",
		"address " + s.Addr,
		"bridge_protocol_version mqttv311",
		"bridge_cafile " + ca,
		"remote_clientid " + dev,
		"remote_username " + s.Username(dev, ""),
		"remote_password " + s.ModuleToken(t, dev, "", keyDev, time.Hour),
		"cleansession true",
		"restart_timeout 1",
		"topic # out 1 plant/ devices/" + dev + "/messages/events/",
	}})
	p := mosquittotest.NewProducer(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The bridge may not be up yet: publish until something arrives.
	got := make(chan []hubemu.Message, 1)
	go func() {
		up, _ := s.WaitUpstream(ctx, 1)
		got <- up
	}()
	var up []hubemu.Message
wait:
	for {
		p.Publish("plant/site=plant%201", "reading")
		select {
		case up = <-got:
			break wait
		case <-time.After(500 * time.Millisecond):
		}
	}
	if len(up) == 0 || string(up[0].Body) != "reading" || up[0].Properties["site"] != "plant 1" || up[0].From != dev {
		t.Fatalf("Upstream() = %+v, want the plant's reading from %s\nemulator log:\n%s", up, dev, log.String())
	}
	if !strings.Contains(log.String(), "connect refused: protocol level") {
		t.Errorf("the bridge's first CONNECT (try_private) was not refused:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "$SYS/broker/connection/") {
		t.Errorf("the bridge's notification was not seen:\n%s", log.String())
	}
}
