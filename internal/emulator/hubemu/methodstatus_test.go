package hubemu_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// A direct method on a module that is not connected answers as IoT Hub
// does: 404, iothub-errorcode DeviceNotOnline, and a Message that is JSON
// with errorCode 404103 and the connect timeout; with
// connectTimeoutInSeconds, a module that connects in time gets the call.
func TestMethodNotOnline(t *testing.T) {
	s := start(t, nil)
	errorOf := func(body []byte) (code int, msg, timeout string) {
		t.Helper()
		var outer struct{ Message string }
		var inner struct {
			ErrorCode int    `json:"errorCode"`
			Message   string `json:"message"`
			Info      struct {
				Timeout string `json:"timeout"`
			} `json:"info"`
			TimestampUTC string `json:"timestampUtc"`
		}
		if err := json.Unmarshal(body, &outer); err != nil {
			t.Fatalf("error body %s: %v", body, err)
		}
		if err := json.Unmarshal([]byte(outer.Message), &inner); err != nil || inner.TimestampUTC == "" {
			t.Fatalf("error Message %q is not IoT Hub's JSON: %v", outer.Message, err)
		}
		return inner.ErrorCode, inner.Message, inner.Info.Timeout
	}

	start := time.Now()
	code, body, h := request(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping","responseTimeoutInSeconds":5,"connectTimeoutInSeconds":1}`, nil)
	if code != 404 || h.Get("iothub-errorcode") != "DeviceNotOnline" {
		t.Fatalf("method on a module not connected = %d %s %q, want 404 DeviceNotOnline", code, body, h.Get("iothub-errorcode"))
	}
	if n, msg, timeout := errorOf(body); n != 404103 || msg != "Timed out waiting for device to connect." || timeout != "00:00:01" {
		t.Errorf("error = %d %q timeout %q", n, msg, timeout)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("connectTimeoutInSeconds 1 answered after %v", d)
	}

	// The module connects while the call waits.
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, body, _ = request(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping","payload":{"x":1},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":10}`, nil)
	}()
	time.Sleep(200 * time.Millisecond)
	c := s.Connect(t, dev, "a", keyA, nil)
	wait(t, "subscribe methods", c.Subscribe("$iothub/methods/POST/#", 1, func(c paho.Client, m paho.Message) {
		_, query, _ := strings.Cut(m.Topic(), "?")
		c.Publish("$iothub/methods/res/200/?"+query, 1, false, `{"pong":true}`)
	}))
	<-done
	if code != 200 || !jsonEq(t, body, `{"status":200,"payload":{"pong":true}}`) {
		t.Errorf("method on a module connecting within connectTimeoutInSeconds = %d %s", code, body)
	}

	// Without connectTimeoutInSeconds: no wait, info.timeout zero.
	code, body, h = request(t, s, "POST", "/twins/edge1/modules/b/methods"+api, `{"methodName":"ping","responseTimeoutInSeconds":5}`, nil)
	if code != 404 || h.Get("iothub-errorcode") != "DeviceNotOnline" {
		t.Errorf("method on b = %d %s", code, body)
	} else if _, _, timeout := errorOf(body); timeout != "00:00:00" {
		t.Errorf("default connect timeout = %q, want 00:00:00", timeout)
	}
	if code, body, _ := request(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping","connectTimeoutInSeconds":301}`, nil); code != 400 {
		t.Errorf("connectTimeoutInSeconds 301 = %d %s, want 400", code, body)
	}
}
