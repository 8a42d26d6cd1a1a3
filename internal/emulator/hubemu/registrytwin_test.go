package hubemu_test

import (
	"encoding/json"
	"testing"
)

// Deleting a module identity deletes its twin, as IoT Hub does: a module
// created again under the same name starts from a fresh twin.
func TestDeletedModuleLosesTwin(t *testing.T) {
	s := start(t, nil)
	k1, k2 := []byte("new-primary-key-0123456789abcdef"), []byte("new-secondary-key-0123456789abcd")
	moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k1, k2), nil)
	if code, body := call(t, s, "PATCH", "/twins/edge1/modules/relay"+api, `{"properties":{"desired":{"interval":7}}}`); code != 200 {
		t.Fatalf("PATCH twin = %d %s", code, body)
	}
	if code, body, _ := request(t, s, "DELETE", "/devices/edge1/modules/relay"+api, "", nil); code != 204 {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	moduleCall(t, s, "PUT", "/devices/edge1/modules/relay", sasBody(dev, "relay", k1, k2), nil)
	code, body := call(t, s, "GET", "/twins/edge1/modules/relay"+api, "")
	var twin struct {
		Version    int `json:"version"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(body, &twin); code != 200 || err != nil {
		t.Fatalf("GET twin = %d %s (%v)", code, body, err)
	}
	if twin.Version != 1 || twin.Properties.Desired["interval"] != nil {
		t.Errorf("the re-created module's twin is the old one: %s", body)
	}
}
