package hubemu_test

import (
	"encoding/json"
	"strings"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
)

func call(t *testing.T, s *hubtest.Server, method, path, body string) (int, []byte) {
	t.Helper()
	code, b, _ := request(t, s, method, path, body, nil)
	return code, b
}

const api = "?api-version=2021-04-12"

func TestServiceAPI(t *testing.T) {
	s := start(t, nil)

	if code, body := call(t, s, "GET", "/twins/edge1/modules/a", ""); code != 400 || !strings.Contains(string(body), `"Message"`) {
		t.Errorf("GET without api-version = %d %s, want 400 with a Message", code, body)
	}
	code, body := call(t, s, "GET", "/twins/edge1/modules/a"+api, "")
	if code != 200 || !jsonEq(t, body, `{"deviceId":"edge1","moduleId":"a","etag":"AAAAAAAAAAE=","version":1,"properties":{"desired":{"$version":1},"reported":{"$version":1}}}`) {
		t.Errorf("GET twin = %d %s", code, body)
	}
	if code, _ := call(t, s, "GET", "/twins/edge1/modules/nobody"+api, ""); code != 404 {
		t.Errorf("GET unknown twin = %d, want 404", code)
	}

	// PATCH desired reaches a connected module.
	tc := newTwinClient(t, s, "a", keyA, nil)
	code, body = call(t, s, "PATCH", "/twins/edge1/modules/a"+api, `{"properties":{"desired":{"interval":7}}}`)
	if code != 200 || !jsonEq(t, body, `{"deviceId":"edge1","moduleId":"a","etag":"AAAAAAAAAAI=","version":2,"properties":{"desired":{"interval":7,"$version":2},"reported":{"$version":1}}}`) {
		t.Errorf("PATCH twin = %d %s", code, body)
	}
	if m := recv(t, tc.desired, "desired push"); !jsonEq(t, m.Payload(), `{"interval":7,"$version":2}`) {
		t.Errorf("desired push %s", m.Payload())
	}
	if code, _ := call(t, s, "PATCH", "/twins/edge1/modules/a"+api, `{"properties":{"desired":{"bad.key":1}}}`); code != 400 {
		t.Errorf("PATCH with a bad key = %d, want 400", code)
	}

	// Device twins too.
	if code, body := call(t, s, "GET", "/twins/edge1"+api, ""); code != 200 || !strings.Contains(string(body), `"deviceId":"edge1"`) || strings.Contains(string(body), "moduleId") {
		t.Errorf("GET device twin = %d %s", code, body)
	}

	// Timeouts out of IoT Hub's bounds: response 5..300 s (0: the
	// default), connect 0..300 s.
	for _, bad := range []string{`"responseTimeoutInSeconds":1`, `"responseTimeoutInSeconds":4`, `"responseTimeoutInSeconds":301`, `"responseTimeoutInSeconds":-1`, `"connectTimeoutInSeconds":301`} {
		code, body := call(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping",`+bad+`}`)
		wantError(t, code, body, 400, "ArgumentInvalid", "method with "+bad)
	}

	// Methods: 404 while not subscribed, 200 with the answer, 504 unanswered.
	if code, body := call(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping","payload":{},"responseTimeoutInSeconds":5}`); code != 404 {
		t.Errorf("method on an unsubscribed module = %d %s, want 404", code, body)
	}
	wait(t, "subscribe methods", tc.c.Subscribe("$iothub/methods/POST/#", 1, func(c paho.Client, m paho.Message) {
		if strings.HasPrefix(m.Topic(), "$iothub/methods/POST/ping/") {
			_, query, _ := strings.Cut(strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/ping/"), "?")
			c.Publish("$iothub/methods/res/200/?"+query, 1, false, `{"pong":true}`)
		}
	}))
	code, body = call(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"ping","payload":{"x":1},"responseTimeoutInSeconds":5}`)
	if code != 200 || !jsonEq(t, body, `{"status":200,"payload":{"pong":true}}`) {
		t.Errorf("method ping = %d %s", code, body)
	}
	if code, body := call(t, s, "POST", "/twins/edge1/modules/a/methods"+api, `{"methodName":"slow","responseTimeoutInSeconds":5}`); code != 504 || !strings.Contains(string(body), `"Message"`) {
		t.Errorf("unanswered method = %d %s, want 504 with a Message", code, body)
	}

	// The upstream sink.
	wait(t, "publish", tc.c.Publish("devices/edge1/modules/a/messages/events/%24.on=up&k=v", 1, false, "hi"))
	code, body = call(t, s, "GET", "/messages/upstream"+api, "")
	var up []hubemu.Message
	if err := json.Unmarshal(body, &up); code != 200 || err != nil || len(up) != 1 || string(up[0].Body) != "hi" || up[0].Properties["k"] != "v" {
		t.Errorf("GET /messages/upstream = %d %s (%v)", code, body, err)
	}
}
