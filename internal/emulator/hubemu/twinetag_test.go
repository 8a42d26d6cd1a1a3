package hubemu_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// A twin's ETag changes with every change, desired or reported, and a
// PATCH with If-Match of another ETag is 412 PreconditionFailed and
// changes nothing; "*" or no If-Match patch any twin, and an ETag without
// its quotes is an invalid argument.
func TestTwinETag(t *testing.T) {
	s := start(t, nil)
	etagOf := func(body []byte) (string, int64) {
		t.Helper()
		var tw struct {
			ETag    string `json:"etag"`
			Version int64  `json:"version"`
		}
		if err := json.Unmarshal(body, &tw); err != nil || tw.ETag == "" {
			t.Fatalf("twin %s: no etag (%v)", body, err)
		}
		return tw.ETag, tw.Version
	}
	_, body := call(t, s, "GET", "/twins/edge1/modules/a"+api, "")
	e1, v1 := etagOf(body)
	patch := func(ifMatch, desired string) (int, []byte) {
		t.Helper()
		h := map[string]string{}
		if ifMatch != "" {
			h["If-Match"] = ifMatch
		}
		code, body, _ := request(t, s, "PATCH", "/twins/edge1/modules/a"+api, `{"properties":{"desired":`+desired+`}}`, h)
		return code, body
	}
	code, body := patch(`"`+e1+`"`, `{"x":1}`)
	e2, v2 := etagOf(body)
	if code != 200 || e2 == e1 || v2 != v1+1 {
		t.Fatalf("PATCH with the twin's ETag = %d %s", code, body)
	}
	if code, body := patch(`"`+e1+`"`, `{"x":2}`); code != 412 || !strings.Contains(string(body), "PreconditionFailed") {
		t.Errorf("PATCH with a stale ETag = %d %s, want 412 PreconditionFailed", code, body)
	}
	// The same If-Match reading as the registry and configurations.
	code, body = patch(e2, `{"x":2}`)
	wantError(t, code, body, 400, "ArgumentInvalid", "PATCH with the ETag unquoted (IoT Hub wants it quoted)")
	_, body = call(t, s, "GET", "/twins/edge1/modules/a"+api, "")
	if e, _ := etagOf(body); e != e2 || !strings.Contains(string(body), `"x":1`) {
		t.Errorf("a refused PATCH changed the twin: %s", body)
	}

	// A reported change moves the ETag too.
	tc := newTwinClient(t, s, "a", keyA, nil)
	if m := tc.request(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", `{"ok":true}`); !strings.Contains(m.Topic(), "/204/") {
		t.Fatalf("reported patch answered %s", m.Topic())
	}
	_, body = call(t, s, "GET", "/twins/edge1/modules/a"+api, "")
	if e3, v3 := etagOf(body); e3 == e2 || v3 != v2+1 {
		t.Errorf("after a reported change: etag %s version %d, was %s %d", e3, v3, e2, v2)
	}
	if code, _ := patch("*", `{"x":3}`); code != 200 {
		t.Errorf("PATCH with If-Match * = %d, want 200", code)
	}
}
