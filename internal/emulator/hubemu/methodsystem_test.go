package hubemu_test

import (
	"context"
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// $edgeAgent and $edgeHub of an edge device exist even when Config.Key has
// no key for them: a method call on one that is not connected is IoT Hub's
// 404 DeviceNotOnline, not DeviceNotFound; a module that does not exist
// stays DeviceNotFound.
func TestMethodKeylessSystemModuleNotOnline(t *testing.T) {
	s := start(t, func(c *hubemu.Config) { c.Devices = func() []string { return []string{dev} } })
	for _, m := range []string{"$edgeAgent", "$edgeHub"} {
		code, body, h := request(t, s, "POST", "/twins/edge1/modules/"+m+"/methods"+api, `{"methodName":"ping","responseTimeoutInSeconds":5}`, nil)
		if code != 404 || h.Get("iothub-errorcode") != "DeviceNotOnline" {
			t.Errorf("method on %s = %d %s %q, want 404 DeviceNotOnline", m, code, body, h.Get("iothub-errorcode"))
		}
	}
	code, body, _ := request(t, s, "POST", "/twins/edge1/modules/nobody/methods"+api, `{"methodName":"ping"}`, nil)
	wantError(t, code, body, 404, "DeviceNotFound", "method on an unknown module")
	if err := s.SendToInput(context.Background(), dev, "$edgeHub", "in", hubemu.Message{Body: []byte("x")}); err != nil {
		t.Errorf("SendToInput($edgeHub) = %v", err)
	}
}
