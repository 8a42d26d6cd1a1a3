package hubemu_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/hubtest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
)

// request sends a service API request with headers and returns the status,
// body and response headers.
func request(t *testing.T, s *hubtest.Server, method, path, body string, headers map[string]string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

func TestServiceSAS(t *testing.T) {
	ownerKey := []byte("iothubowner-key-0123456789abcdef")
	var logs syncbuf.Buffer
	s := start(t, func(c *hubemu.Config) {
		c.ServicePolicies = map[string][]byte{"iothubowner": ownerKey}
		c.Log = zerolog.New(&logs)
	})
	token := func(resource, skn string, key []byte, expiry time.Time) string {
		tok, err := sas.New(context.Background(), sas.Key(key), resource, skn, expiry)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hub, now := s.HubHostName(), s.Now()
	good := s.ServiceToken(t, "iothubowner", ownerKey, time.Hour)
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"missing", "", 401},
		{"malformed", "SharedAccessSignature garbage", 401},
		{"bearer", "Bearer abc", 401},
		{"bad signature", token(hub, "iothubowner", []byte("another-key"), now.Add(time.Hour)), 401},
		{"expired", token(hub, "iothubowner", ownerKey, now.Add(-10*time.Minute)), 401},
		{"unknown policy", token(hub, "registryRead", ownerKey, now.Add(time.Hour)), 401},
		{"no skn", token(hub, "", ownerKey, now.Add(time.Hour)), 401},
		{"wrong audience", token("other-hub.azure-devices.net", "iothubowner", ownerKey, now.Add(time.Hour)), 401},
		{"device audience", token(sas.DeviceResource(hub, dev), "iothubowner", ownerKey, now.Add(time.Hour)), 401},
		{"within the skew", token(hub, "iothubowner", ownerKey, now.Add(-2*time.Minute)), 200},
		{"upper-case host", token(strings.ToUpper(hub), "iothubowner", ownerKey, now.Add(time.Hour)), 200},
		{"good", good, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := request(t, s, "GET", "/twins/edge1/modules/a"+api, "", map[string]string{"Authorization": tc.auth})
			if code != tc.want {
				t.Fatalf("GET with %s token = %d %s, want %d", tc.name, code, body, tc.want)
			}
			if code != 401 {
				return
			}
			var e struct{ Message string }
			if err := json.Unmarshal(body, &e); err != nil || e.Message != "ErrorCode:IotHubUnauthorizedAccess;Unauthorized" {
				t.Errorf("401 body %s, want IoT Hub's IotHubUnauthorizedAccess message", body)
			}
			if _, sig, ok := strings.Cut(tc.auth, "sig="); ok {
				sig, _, _ = strings.Cut(sig, "&")
				plain, err := url.QueryUnescape(sig)
				if err != nil {
					t.Fatal(err)
				}
				for _, form := range []string{sig, plain} {
					if strings.Contains(string(body), form) {
						t.Errorf("401 body %s echoes the signature", body)
					}
					if strings.Contains(logs.String(), form) {
						t.Errorf("the log holds the signature of the %s token", tc.name) // not printed: it is a secret
					}
				}
			}
		})
	}
	if !strings.Contains(logs.String(), "service request unauthorized") {
		t.Errorf("log %q does not record the refusals", logs.String())
	}
	// Every route is covered, and api-version is still required.
	if code, body, _ := request(t, s, "GET", "/configurations"+api, "", nil); code != 401 {
		t.Errorf("GET /configurations without a token = %d %s, want 401", code, body)
	}
	if code, _, _ := request(t, s, "GET", "/twins/edge1", "", map[string]string{"Authorization": good}); code != 400 {
		t.Errorf("GET without api-version = %d, want 400", code)
	}
}

func TestDeviceTags(t *testing.T) {
	s := start(t, nil)
	code, body := call(t, s, "PATCH", "/twins/edge1"+api, `{"tags":{"ring":"canary","site":{"name":"north","line":2}}}`)
	if code != 200 || !jsonEq(t, body, `{"deviceId":"edge1","etag":"AAAAAAAAAAI=","version":2,"tags":{"ring":"canary","site":{"name":"north","line":2}},"properties":{"desired":{"$version":1},"reported":{"$version":1}}}`) {
		t.Errorf("PATCH tags = %d %s", code, body)
	}
	code, body = call(t, s, "PATCH", "/twins/edge1"+api, `{"tags":{"site":{"line":null}},"properties":{"desired":{"mode":"eco"}}}`)
	if code != 200 || !jsonEq(t, body, `{"deviceId":"edge1","etag":"AAAAAAAAAAM=","version":3,"tags":{"ring":"canary","site":{"name":"north"}},"properties":{"desired":{"mode":"eco","$version":2},"reported":{"$version":1}}}`) {
		t.Errorf("PATCH tags and desired = %d %s", code, body)
	}
	for _, bad := range []string{
		`{"tags":{"a.b":1}}`,
		`{"tags":{"$x":1}}`,
		`{"tags":{"l":[1]}}`,
		`{"tags":"x"}`,
		`{"tags":{"ok":1},"properties":{"desired":{"bad.key":1}}}`,
	} {
		if code, body := call(t, s, "PATCH", "/twins/edge1"+api, bad); code != 400 {
			t.Errorf("PATCH %s = %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := call(t, s, "PATCH", "/twins/edge1/modules/a"+api, `{"tags":{"x":1}}`); code != 400 {
		t.Errorf("PATCH module tags = %d, want 400", code)
	}
	if code, _ := call(t, s, "PATCH", "/twins/nobody"+api, `{"tags":{"x":1}}`); code != 404 {
		t.Errorf("PATCH tags of an unknown device = %d, want 404", code)
	}
	if code, body := call(t, s, "GET", "/twins/edge1/modules/a"+api, ""); code != 200 || strings.Contains(string(body), "tags") {
		t.Errorf("GET module twin = %d %s, want no tags", code, body)
	}

	if err := s.SetTags(dev, json.RawMessage(`{"ring":"stable"}`)); err != nil {
		t.Fatal(err)
	}
	tw, err := s.Twin(dev, "")
	if err != nil || !jsonEq(t, tw.Tags, `{"ring":"stable"}`) {
		t.Errorf("Twin().Tags after SetTags = %s, %v; want the tags replaced", tw.Tags, err)
	}
	if err := s.SetTags(dev, json.RawMessage(`{"a.b":1}`)); err == nil {
		t.Error("SetTags with a bad key succeeded")
	}
}

// edgeContent returns a standard deployment's modulesContent: edgeAgent
// running relay:<version>, edgeHub routing upstream, relay's batch size.
func edgeContent(version string, batch int) string {
	return fmt.Sprintf(`{
	"$edgeAgent": {"properties.desired": {
		"schemaVersion": "1.1",
		"runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
		"systemModules": {
			"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"}},
			"edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{}"}}
		},
		"modules": {"relay": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
			"settings": {"image": "lab.azurecr.io/relay:%s", "createOptions": "{}"}}}
	}},
	"$edgeHub": {"properties.desired": {"schemaVersion": "1.2", "routes": {"up": "FROM /messages/* INTO $upstream"}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
	"relay": {"properties.desired": {"batch": %d}}
}`, version, batch)
}

// configBody returns a PUT /configurations body.
func configBody(t *testing.T, id, condition string, priority int, modulesContent string, queries map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id":              id,
		"schemaVersion":   "2.0",
		"labels":          map[string]string{"app": "relay"},
		"content":         map[string]any{"modulesContent": json.RawMessage(modulesContent)},
		"targetCondition": condition,
		"priority":        priority,
		"metrics":         map[string]any{"queries": queries},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// configResult is what tests read from a configuration.
type configResult struct {
	ID                 string
	Etag               string
	Priority           int
	TargetCondition    string
	CreatedTimeUtc     time.Time
	LastUpdatedTimeUtc time.Time
	SystemMetrics      struct{ Results map[string]int }
	Metrics            struct{ Results map[string]int }
}

func decodeConfig(t *testing.T, body []byte) configResult {
	t.Helper()
	var c configResult
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("configuration %s: %v", body, err)
	}
	return c
}

func TestConfigurationsCRUD(t *testing.T) {
	s := start(t, nil)
	body := configBody(t, "relay-v1", "tags.ring='canary'", 10, edgeContent("1.0", 10), nil)

	code, resp, hdr := request(t, s, "PUT", "/configurations/relay-v1"+api, body, nil)
	if code != 201 {
		t.Fatalf("create = %d %s, want 201", code, resp)
	}
	created := decodeConfig(t, resp)
	if created.ID != "relay-v1" || created.Etag == "" || strings.Contains(created.Etag, `"`) || hdr.Get("ETag") != `"`+created.Etag+`"` || created.CreatedTimeUtc.IsZero() || created.Priority != 10 {
		t.Errorf("create answered %s with ETag header %q", resp, hdr.Get("ETag"))
	}
	var full map[string]json.RawMessage
	if err := json.Unmarshal(resp, &full); err != nil {
		t.Fatal(err)
	}
	if !jsonEq(t, full["content"], `{"modulesContent":`+edgeContent("1.0", 10)+`}`) || !jsonEq(t, full["systemMetrics"], `{"results":{"targetedCount":0,"appliedCount":0},"queries":{"targetedCount":"SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND tags.ring='canary'","appliedCount":"SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[relay-v1]].status = 'Applied'"}}`) {
		t.Errorf("create answered content %s, systemMetrics %s", full["content"], full["systemMetrics"])
	}

	// A second create of the same id, and updates with a stale ETag: 412.
	if code, resp, _ := request(t, s, "PUT", "/configurations/relay-v1"+api, body, nil); code != 412 || !strings.Contains(string(resp), "ErrorCode:PreconditionFailed") {
		t.Errorf("create of an existing id = %d %s, want 412 PreconditionFailed", code, resp)
	}
	update := configBody(t, "relay-v1", "tags.ring='canary' OR tags.ring='early'", 20, edgeContent("1.0", 10), nil)
	// If-Match must be quoted, as IoT Hub wants it; a bare ETag changes
	// nothing.
	for _, bare := range []string{created.Etag, `"` + created.Etag, `""`} {
		code, resp, _ := request(t, s, "PUT", "/configurations/relay-v1"+api, update, map[string]string{"If-Match": bare})
		if code != 400 || !strings.Contains(string(resp), "ErrorCode:ArgumentInvalid") || !strings.Contains(string(resp), "If-Match must be a quoted ETag or *") {
			t.Errorf("update with If-Match %s = %d %s, want 400 ArgumentInvalid", bare, code, resp)
		}
		code, resp, _ = request(t, s, "DELETE", "/configurations/relay-v1"+api, "", map[string]string{"If-Match": bare})
		if code != 400 || !strings.Contains(string(resp), "If-Match must be a quoted ETag or *") {
			t.Errorf("delete with If-Match %s = %d %s, want 400 ArgumentInvalid", bare, code, resp)
		}
	}
	if code, resp := call(t, s, "GET", "/configurations/relay-v1"+api, ""); code != 200 || decodeConfig(t, resp).Etag != created.Etag || decodeConfig(t, resp).Priority != 10 {
		t.Errorf("after refused If-Match: GET = %d %s, want it unchanged", code, resp)
	}
	code, resp, _ = request(t, s, "PUT", "/configurations/relay-v1"+api, update, map[string]string{"If-Match": `"` + created.Etag + `"`})
	updated := decodeConfig(t, resp)
	if code != 200 || updated.Priority != 20 || updated.Etag == created.Etag || !updated.CreatedTimeUtc.Equal(created.CreatedTimeUtc) {
		t.Errorf("update with the ETag = %d %s, want 200, priority 20, a new ETag", code, resp)
	}
	if code, resp, _ := request(t, s, "PUT", "/configurations/relay-v1"+api, update, map[string]string{"If-Match": `"` + created.Etag + `"`}); code != 412 {
		t.Errorf("update with a stale ETag = %d %s, want 412", code, resp)
	}
	// The content cannot change.
	changed := configBody(t, "relay-v1", "tags.ring='canary'", 20, edgeContent("2.0", 10), nil)
	if code, resp, _ := request(t, s, "PUT", "/configurations/relay-v1"+api, changed, map[string]string{"If-Match": "*"}); code != 400 {
		t.Errorf("content change = %d %s, want 400", code, resp)
	}
	code, resp, _ = request(t, s, "PUT", "/configurations/relay-v1"+api, update, map[string]string{"If-Match": "*"})
	if forced := decodeConfig(t, resp); code != 200 || forced.Etag == updated.Etag {
		t.Errorf("update with If-Match * = %d %s, want 200 and a new ETag", code, resp)
	}
	if code, _, _ := request(t, s, "PUT", "/configurations/missing"+api, configBody(t, "missing", "", 0, edgeContent("1.0", 1), nil), map[string]string{"If-Match": `"MQ=="`}); code != 404 {
		t.Errorf("update of a missing configuration = %d, want 404", code)
	}

	// Get and list.
	code, resp = call(t, s, "GET", "/configurations/relay-v1"+api, "")
	got := decodeConfig(t, resp)
	if code != 200 || got.TargetCondition != "tags.ring='canary' OR tags.ring='early'" || got.Priority != 20 {
		t.Errorf("GET = %d %s", code, resp)
	}
	if code, _ := call(t, s, "GET", "/configurations/nothing"+api, ""); code != 404 {
		t.Errorf("GET missing = %d, want 404", code)
	}
	if code, resp, _ := request(t, s, "PUT", "/configurations/relay-v0"+api, configBody(t, "relay-v0", "", 0, edgeContent("0.9", 1), nil), nil); code != 201 {
		t.Fatalf("create relay-v0 = %d %s", code, resp)
	}
	for query, want := range map[string][]string{"": {"relay-v0", "relay-v1"}, "&top=1": {"relay-v0"}, "&top=0": {"relay-v0", "relay-v1"}} {
		code, resp := call(t, s, "GET", "/configurations"+api+query, "")
		var list []configResult
		if err := json.Unmarshal(resp, &list); code != 200 || err != nil {
			t.Fatalf("list%s = %d %s", query, code, resp)
		}
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID)
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("list%s = %v, want %v", query, ids, want)
		}
	}
	if code, _ := call(t, s, "GET", "/configurations"+api+"&top=x", ""); code != 400 {
		t.Errorf("list with top=x = %d, want 400", code)
	}

	// Delete honours If-Match.
	code, resp = call(t, s, "GET", "/configurations/relay-v1"+api, "")
	current := decodeConfig(t, resp).Etag
	if code, resp, _ := request(t, s, "DELETE", "/configurations/relay-v1"+api, "", map[string]string{"If-Match": `"` + created.Etag + `"`}); code != 412 {
		t.Errorf("delete with a stale ETag = %d %s, want 412", code, resp)
	}
	if code, resp, _ := request(t, s, "DELETE", "/configurations/relay-v1"+api, "", map[string]string{"If-Match": `"` + current + `"`}); code != 204 {
		t.Errorf("delete = %d %s, want 204", code, resp)
	}
	if code, _ := call(t, s, "GET", "/configurations/relay-v1"+api, ""); code != 404 {
		t.Errorf("GET after delete = %d, want 404", code)
	}
	if code, _ := call(t, s, "DELETE", "/configurations/relay-v1"+api, ""); code != 404 {
		t.Errorf("second delete = %d, want 404", code)
	}
	if code, _ := call(t, s, "DELETE", "/configurations/relay-v0"+api, ""); code != 204 {
		t.Errorf("delete without If-Match = %d, want 204", code)
	}
}

// Bodies and ids IoT Hub refuses are answered 400 ArgumentInvalid and
// store nothing.
func TestConfigurationRejected(t *testing.T) {
	s := start(t, nil)
	content := edgeContent("1.0", 1)
	ok := configBody(t, "c1", "tags.a='b'", 1, content, map[string]string{"m": "SELECT deviceId FROM devices"})
	for _, tc := range []struct{ name, id, body string }{
		{"not JSON", "c1", `{"id":`},
		{"data after the document", "c1", ok + ` {}`},
		{"array", "c1", `[1]`},
		{"empty", "c1", ``},
		{"negative priority", "c1", configBody(t, "c1", "", -1, content, nil)},
		{"fractional priority", "c1", strings.Replace(ok, `"priority":1`, `"priority":1.5`, 1)},
		{"string priority", "c1", strings.Replace(ok, `"priority":1`, `"priority":"1"`, 1)},
		{"id differs", "c1", configBody(t, "c2", "", 1, content, nil)},
		{"label not a string", "c1", strings.Replace(ok, `"labels":{"app":"relay"}`, `"labels":{"n":1}`, 1)},
		{"no content", "c1", `{"id":"c1","priority":1}`},
		{"modulesContent null", "c1", configBody(t, "c1", "", 1, `null`, nil)},
		{"modulesContent array", "c1", configBody(t, "c1", "", 1, `[]`, nil)},
		{"module not an object", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":{}},"relay":1}`, nil)},
		{"desired not an object", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":"x"}}`, nil)},
		{"unknown content key", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.reported":{}}}`, nil)},
		{"bad module name", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":{}},"my module":{"properties.desired":{}}}`, nil)},
		{"no $edgeAgent", "c1", configBody(t, "c1", "", 1, `{"relay":{"properties.desired":{}}}`, nil)},
		{"standard and layered", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":{}},"relay":{"properties.desired.x":1}}`, nil)},
		{"layered systemModules", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired.systemModules.edgeHub":{}}}`, nil)},
		{"layered empty segment", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{},"relay":{"properties.desired..x":1}}`, nil)},
		{"twin key with a dot", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":{}},"relay":{"properties.desired":{"a":{"b.c":1}}}}`, nil)},
		{"array in desired", "c1", configBody(t, "c1", "", 1, `{"$edgeAgent":{"properties.desired":{"l":[1]}}}`, nil)},
		{"deviceContent", "c1", strings.Replace(ok, `"content":{`, `"content":{"deviceContent":{"properties.desired.x":1},`, 1)},
		{"bad targetCondition", "c1", configBody(t, "c1", `tags.a="b"`, 1, content, nil)},
		{"bad metric", "c1", configBody(t, "c1", "", 1, content, map[string]string{"m": "SELECT FROM nowhere"})},
		{"upper-case id", "Relay", strings.Replace(ok, `"id":"c1"`, `"id":"Relay"`, 1)},
		{"id with a space", "a%20b", strings.Replace(ok, `"id":"c1"`, `"id":"a b"`, 1)},
		{"id with &", "a&b", strings.Replace(ok, `"id":"c1"`, `"id":"a\u0026b"`, 1)},
		{"id with ^", "a%5Eb", strings.Replace(ok, `"id":"c1"`, `"id":"a^b"`, 1)},
		{"id with {", "a%7Bb", strings.Replace(ok, `"id":"c1"`, `"id":"a{b"`, 1)},
		{"id too long", strings.Repeat("a", 129), strings.Replace(ok, `"id":"c1"`, `"id":"`+strings.Repeat("a", 129)+`"`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, resp, _ := request(t, s, "PUT", "/configurations/"+tc.id+api, tc.body, nil)
			if code != 400 || !strings.Contains(string(resp), "ErrorCode:ArgumentInvalid") {
				t.Errorf("PUT %.60q = %d %s, want 400 ArgumentInvalid", tc.body, code, resp)
			}
		})
	}
	// The message says what the id rules are: any printable ASCII but a
	// few characters (ids like "a!b" or "x@y" pass).
	_, resp, _ := request(t, s, "PUT", "/configurations/a%20b"+api, strings.Replace(ok, `"id":"c1"`, `"id":"a b"`, 1), nil)
	var e struct{ Message string }
	if err := json.Unmarshal(resp, &e); err != nil || !strings.Contains(e.Message, `no space or & ^ [ ] { } \ | " < > /`) {
		t.Errorf("PUT of id \"a b\" answered %s, want the forbidden characters named", resp)
	}
	if code, resp := call(t, s, "GET", "/configurations"+api, ""); code != 200 || !jsonEq(t, resp, `[]`) {
		t.Errorf("configurations after refused PUTs = %d %s, want none", code, resp)
	}
	// The good body, an id of 128 characters and the allowed punctuation pass.
	for _, id := range []string{"c1", strings.Repeat("b", 128), "relay_v1-2.0+x", "a!b~c@d"} {
		body := strings.Replace(ok, `"id":"c1"`, `"id":"`+id+`"`, 1)
		if code, resp, _ := request(t, s, "PUT", "/configurations/"+id+api, body, nil); code != 201 {
			t.Errorf("PUT %s = %d %s, want 201", id, code, resp)
		}
	}
}

func TestApplyConfigurationContent(t *testing.T) {
	s := start(t, nil)
	tc := newTwinClient(t, s, "a", keyA, nil)
	if _, err := s.UpdateDesired(dev, "a", json.RawMessage(`{"old":1,"keep":{"y":1,"z":2}}`)); err != nil {
		t.Fatal(err)
	}
	recv(t, tc.desired, "first desired patch")

	code, body := call(t, s, "POST", "/devices/edge1/applyConfigurationContent"+api,
		`{"modulesContent":{"a":{"properties.desired":{"keep":{"y":1},"new":{"n":2}}},"b":{"properties.desired":{"mode":"eco"}}}}`)
	if code != 204 || len(body) != 0 {
		t.Fatalf("applyConfigurationContent = %d %s, want 204", code, body)
	}
	m := recv(t, tc.desired, "desired patch from applyConfigurationContent")
	if m.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=3" || !jsonEq(t, m.Payload(), `{"old":null,"keep":{"z":null},"new":{"n":2},"$version":3}`) {
		t.Errorf("desired push %s %s, want the replacement as a merge patch", m.Topic(), m.Payload())
	}
	for _, want := range []struct {
		module, desired string
		version         int64
	}{{"a", `{"keep":{"y":1},"new":{"n":2}}`, 3}, {"b", `{"mode":"eco"}`, 2}} {
		tw, err := s.Twin(dev, want.module)
		if err != nil || tw.DesiredVersion != want.version || !jsonEq(t, tw.Desired, want.desired) {
			t.Errorf("twin of %s: desired %s at %d (%v), want %s at %d", want.module, tw.Desired, tw.DesiredVersion, err, want.desired, want.version)
		}
	}
	// The same content again changes nothing.
	if code, _ := call(t, s, "POST", "/devices/edge1/applyConfigurationContent"+api, `{"modulesContent":{"a":{"properties.desired":{"keep":{"y":1},"new":{"n":2}}}}}`); code != 204 {
		t.Errorf("second apply = %d, want 204", code)
	}
	if tw, _ := s.Twin(dev, "a"); tw.DesiredVersion != 3 {
		t.Errorf("desired $version %d after applying the same content, want 3", tw.DesiredVersion)
	}

	// Modules without properties are valid content that changes nothing.
	for _, empty := range []string{`{"modulesContent":{"$edgeAgent":{}}}`, `{"modulesContent":{"a":{},"b":{}}}`, `{"modulesContent":{}}`} {
		if code, body := call(t, s, "POST", "/devices/edge1/applyConfigurationContent"+api, empty); code != 204 {
			t.Errorf("apply %s = %d %s, want 204", empty, code, body)
		}
	}
	if tw, _ := s.Twin(dev, "a"); tw.DesiredVersion != 3 {
		t.Errorf("desired $version %d after applying modules without properties, want 3", tw.DesiredVersion)
	}

	for _, bad := range []string{
		`{"modulesContent":{"$edgeAgent":{"properties.desired.modules.relay":{"type":"docker"}}}}`,
		`{"modulesContent":{"a":{"properties.desired":{"x":1}}}} {}`,
		`{"modulesContent":{"a":{"properties.desired":[1]}}}`,
		`{"modulesContent":[]}`,
		`{}`,
		`{"modulesContent":{}`,
	} {
		if code, body := call(t, s, "POST", "/devices/edge1/applyConfigurationContent"+api, bad); code != 400 {
			t.Errorf("apply %s = %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := call(t, s, "POST", "/devices/nobody/applyConfigurationContent"+api, `{"modulesContent":{}}`); code != 404 {
		t.Errorf("apply to an unknown device = %d, want 404", code)
	}
}

// A rollout over a fleet of 200 simulated devices: 10 canaries, the rest
// split over two sites; two canaries' edgeAgents fail every deployment.
func TestFleetRollout(t *testing.T) {
	failing := map[string]bool{hubtest.FleetDeviceID(3): true, hubtest.FleetDeviceID(7): true}
	fleet := hubtest.NewFleet(200, func(i int) map[string]any {
		tags := map[string]any{"env": "prod"}
		switch {
		case i <= 10:
			tags["ring"] = "canary"
		case i%2 == 0:
			tags["site"] = "north"
		default:
			tags["site"] = "south"
		}
		return tags
	}, func(d string) bool { return failing[d] })
	s := fleet.Start(t, hubemu.Config{})
	canary, north, south := hubtest.FleetDeviceID(1), hubtest.FleetDeviceID(12), hubtest.FleetDeviceID(13)

	// Metric queries run over the whole hub; each counts its own
	// deployment's devices by configurations.[[id]].status, as IoT Hub's
	// docs write them.
	metrics := func(id string) map[string]string {
		applied := " AND configurations.[[" + id + "]].status = 'Applied'"
		return map[string]string{
			"reportedSuccess": "SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200" + applied,
			"reportedFailed":  "SELECT deviceId FROM devices.modules WHERE moduleId='$edgeAgent' AND properties.reported.lastDesiredStatus.code != 200" + applied,
			"canaries":        "SELECT deviceId FROM devices WHERE tags.ring = 'canary'",
		}
	}
	put := func(id, condition string, priority int, content string) {
		t.Helper()
		if code, resp, _ := request(t, s, "PUT", "/configurations/"+id+api, configBody(t, id, condition, priority, content, metrics(id)), nil); code != 201 {
			t.Fatalf("create %s = %d %s", id, code, resp)
		}
	}
	check := func(id string, targeted, applied, success, failed int) {
		t.Helper()
		code, resp := call(t, s, "GET", "/configurations/"+id+api, "")
		if code != 200 {
			t.Fatalf("GET %s = %d %s", id, code, resp)
		}
		c := decodeConfig(t, resp)
		sm, m := c.SystemMetrics.Results, c.Metrics.Results
		if sm["targetedCount"] != targeted || sm["appliedCount"] != applied || m["reportedSuccess"] != success || m["reportedFailed"] != failed {
			t.Errorf("%s: targeted %d applied %d success %d failed %d; want %d %d %d %d", id, sm["targetedCount"], sm["appliedCount"], m["reportedSuccess"], m["reportedFailed"], targeted, applied, success, failed)
		}
	}
	desired := func(device, module, want string) {
		t.Helper()
		tw, err := s.Twin(device, module)
		if err != nil {
			t.Fatalf("twin of %s/%s: %v", device, module, err)
		}
		if !jsonEq(t, tw.Desired, want) {
			t.Errorf("desired of %s/%s = %s, want %s", device, module, tw.Desired, want)
		}
	}
	agentDesired := func(content string) string {
		var mc map[string]map[string]json.RawMessage
		if err := json.Unmarshal([]byte(content), &mc); err != nil {
			t.Fatal(err)
		}
		return string(mc["$edgeAgent"]["properties.desired"])
	}
	v1, v2 := edgeContent("1.0", 10), edgeContent("2.0", 20)

	// The canary deployment reaches exactly the canaries.
	put("canary-v2", "tags.ring='canary'", 10, v2)
	check("canary-v2", 10, 10, 8, 2)
	desired(canary, "$edgeAgent", agentDesired(v2))
	desired(canary, "relay", `{"batch":20}`)
	desired(north, "$edgeAgent", `{}`)
	tw, _ := s.Twin(hubtest.FleetDeviceID(3), "$edgeAgent")
	if !jsonEq(t, tw.Reported, fmt.Sprintf(`{"lastDesiredVersion":%d,"lastDesiredStatus":{"code":500,"description":"Internal Server Error"}}`, tw.DesiredVersion)) {
		t.Errorf("failing edgeAgent reported %s", tw.Reported)
	}
	if d := fleet.Desired(canary); !strings.Contains(string(d), `"$version":2`) {
		t.Errorf("the canary's edgeAgent saw %s, want $version 2", d)
	}
	code, resp := call(t, s, "GET", "/configurations/canary-v2"+api, "")
	if c := decodeConfig(t, resp); code != 200 || c.Metrics.Results["canaries"] != 10 {
		t.Errorf("FROM devices metric = %v", c.Metrics.Results)
	}

	// A fleet-wide deployment at a lower priority applies everywhere else.
	put("fleet-v1", "tags.env='prod'", 1, v1)
	check("fleet-v1", 200, 190, 190, 0) // the canaries are canary-v2's
	check("canary-v2", 10, 10, 8, 2)
	desired(north, "$edgeAgent", agentDesired(v1))
	desired(canary, "relay", `{"batch":20}`)

	// A newer standard deployment of the same priority wins the tie.
	put("canary-v3", "tags.ring='canary'", 10, edgeContent("3.0", 30))
	check("canary-v2", 10, 0, 0, 0) // superseded: its metrics count nobody
	check("canary-v3", 10, 10, 8, 2)
	desired(canary, "relay", `{"batch":30}`)

	// A layered deployment merges on top of the base where its priority is
	// higher; one below the base is targeted but not applied.
	layered := `{
		"$edgeAgent": {"properties.desired.modules.relay.env.LOG_LEVEL": {"value": "debug"}},
		"$edgeHub": {"properties.desired.routes.debug": "FROM /messages/modules/relay/outputs/debug INTO $upstream"},
		"relay": {"properties.desired.layeredProperties": {"sample": 5}}
	}`
	put("north-debug", "tags.site='north'", 20, layered)
	put("low-layer", "tags.env='prod'", 0, `{"$edgeAgent": {}, "relay": {"properties.desired.ignored": 1}}`)
	check("north-debug", 95, 95, 95, 0)
	check("low-layer", 200, 0, 0, 0)
	var wantAgent map[string]any
	if err := json.Unmarshal([]byte(agentDesired(v1)), &wantAgent); err != nil {
		t.Fatal(err)
	}
	wantAgent["modules"].(map[string]any)["relay"].(map[string]any)["env"] = map[string]any{"LOG_LEVEL": map[string]any{"value": "debug"}}
	wantAgentJSON, _ := json.Marshal(wantAgent)
	desired(north, "$edgeAgent", string(wantAgentJSON))
	desired(north, "$edgeHub", `{"schemaVersion":"1.2","routes":{"up":"FROM /messages/* INTO $upstream","debug":"FROM /messages/modules/relay/outputs/debug INTO $upstream"},"storeAndForwardConfiguration":{"timeToLiveSecs":7200}}`)
	desired(north, "relay", `{"batch":10,"layeredProperties":{"sample":5}}`)
	desired(south, "relay", `{"batch":10}`)

	// A tag change moves a device into the layer.
	if err := s.SetTags(south, json.RawMessage(`{"env":"prod","site":"north"}`)); err != nil {
		t.Fatal(err)
	}
	check("north-debug", 96, 96, 96, 0)
	desired(south, "relay", `{"batch":10,"layeredProperties":{"sample":5}}`)

	// Deleting a deployment hands its devices to the next one down.
	for _, id := range []string{"canary-v3", "canary-v2"} {
		if code, resp := call(t, s, "DELETE", "/configurations/"+id+api, ""); code != 204 {
			t.Fatalf("delete %s = %d %s", id, code, resp)
		}
	}
	check("fleet-v1", 200, 200, 198, 2)
	desired(canary, "$edgeAgent", agentDesired(v1))
	desired(canary, "relay", `{"batch":10}`)

	// Fleet module twins are visible through the service API; others are not.
	if code, resp := call(t, s, "GET", "/twins/"+canary+"/modules/$edgeAgent"+api, ""); code != 200 || !strings.Contains(string(resp), `"lastDesiredStatus"`) {
		t.Errorf("GET $edgeAgent twin = %d %s", code, resp)
	}
	if code, _ := call(t, s, "GET", "/twins/"+canary+"/modules/other"+api, ""); code != 404 {
		t.Errorf("GET an undeployed module twin = %d, want 404", code)
	}
}

// A layered value's nested nulls are dropped as a twin merge drops them, so
// reconciliations that change nothing push nothing; a layered key whose
// value is null deletes the member.
func TestLayeredNullsSettle(t *testing.T) {
	fleet := hubtest.NewFleet(1, func(int) map[string]any { return map[string]any{"env": "prod"} }, nil)
	s := fleet.Start(t, hubemu.Config{})
	d := hubtest.FleetDeviceID(1)
	for _, c := range []struct {
		id       string
		priority int
		content  string
	}{
		{"base", 1, edgeContent("1.0", 10)},
		{"layer", 5, `{"$edgeAgent": {}, "relay": {"properties.desired.x": {"a": 1, "b": null, "c": {"d": null}}, "properties.desired.batch": null}}`},
	} {
		if code, resp, _ := request(t, s, "PUT", "/configurations/"+c.id+api, configBody(t, c.id, "tags.env='prod'", c.priority, c.content, nil), nil); code != 201 {
			t.Fatalf("create %s = %d %s", c.id, code, resp)
		}
	}
	before, err := s.Twin(d, "relay")
	if err != nil || !jsonEq(t, before.Desired, `{"x":{"a":1,"c":{}}}`) {
		t.Fatalf("relay desired = %s (%v), want the layer without its nulls and without batch", before.Desired, err)
	}
	for i := range 3 {
		if err := s.SetTags(d, json.RawMessage(fmt.Sprintf(`{"env":"prod","n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := s.Twin(d, "relay"); after.DesiredVersion != before.DesiredVersion {
		t.Errorf("relay desired $version %d after tag changes that change no deployment, want %d", after.DesiredVersion, before.DesiredVersion)
	}
}

// A deployment changes all of a device's modules or none: a layered value
// above the twin limit is refused when the configuration is created, and a
// merged document above it leaves every module twin as it was.
func TestDeploymentAllOrNothing(t *testing.T) {
	fleet := hubtest.NewFleet(1, func(int) map[string]any { return map[string]any{"env": "prod"} }, nil)
	s := fleet.Start(t, hubemu.Config{})
	d := hubtest.FleetDeviceID(1)
	put := func(id string, priority int, content string) (int, []byte) {
		t.Helper()
		code, resp, _ := request(t, s, "PUT", "/configurations/"+id+api, configBody(t, id, "tags.env='prod'", priority, content, nil), nil)
		return code, resp
	}
	if code, resp := put("base", 1, edgeContent("1.0", 10)); code != 201 {
		t.Fatalf("create base = %d %s", code, resp)
	}
	route := func(n int) string {
		return `"FROM /messages/* WHERE x = '` + strings.Repeat("r", n) + `' INTO $upstream"`
	}
	if code, resp := put("huge", 5, `{"$edgeAgent": {}, "$edgeHub": {"properties.desired.routes.big": `+route(40*1024)+`}}`); code != 400 || !strings.Contains(string(resp), "ErrorCode:ArgumentInvalid") {
		t.Errorf("create with a 40 KB layered route = %d %.200s, want 400 ArgumentInvalid", code, resp)
	}
	agent, _ := s.Twin(d, "$edgeAgent")
	hub, _ := s.Twin(d, "$edgeHub")

	// Two routes of 20 KB pass alone but not together, after $edgeAgent's
	// change has been computed.
	layered := `{"$edgeAgent": {"properties.desired.modules.relay.env.LOG_LEVEL": {"value": "debug"}},
		"$edgeHub": {"properties.desired.routes.big1": ` + route(20*1024) + `, "properties.desired.routes.big2": ` + route(20*1024) + `}}`
	if code, resp := put("too-big", 5, layered); code != 201 {
		t.Fatalf("create too-big = %d %.200s", code, resp)
	}
	for _, want := range []struct {
		module string
		twin   hubemu.Twin
	}{{"$edgeAgent", agent}, {"$edgeHub", hub}} {
		tw, _ := s.Twin(d, want.module)
		if tw.DesiredVersion != want.twin.DesiredVersion || !jsonEq(t, tw.Desired, string(want.twin.Desired)) || !jsonEq(t, tw.Reported, string(want.twin.Reported)) {
			t.Errorf("%s after a deployment too big to apply: desired %.100s at %d, reported %s; want it unchanged at %d", want.module, tw.Desired, tw.DesiredVersion, tw.Reported, want.twin.DesiredVersion)
		}
	}
	code, resp := call(t, s, "GET", "/configurations/too-big"+api, "")
	if c := decodeConfig(t, resp); code != 200 || c.SystemMetrics.Results["targetedCount"] != 1 || c.SystemMetrics.Results["appliedCount"] != 0 {
		t.Errorf("too-big systemMetrics = %v, want targeted 1 applied 0", c.SystemMetrics.Results)
	}
}

// Concurrent $edgeAgent changes are judged in order: the report always
// ends at the last desired $version, and so does what the agent saw last.
func TestAgentReportsInOrder(t *testing.T) {
	var mu sync.Mutex
	var last string
	s := start(t, func(c *hubemu.Config) {
		c.Devices = func() []string { return []string{dev} }
		c.Agent = func(_ string, desired json.RawMessage) int {
			// An agent that takes a varying time, as a real one does.
			time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
			mu.Lock()
			last = string(desired)
			mu.Unlock()
			return 200
		}
	})
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := s.UpdateDesired(dev, "$edgeAgent", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	tw, err := s.Twin(dev, "$edgeAgent")
	if err != nil {
		t.Fatal(err)
	}
	var reported struct{ LastDesiredVersion int64 }
	if err := json.Unmarshal(tw.Reported, &reported); err != nil || tw.DesiredVersion != n+1 || reported.LastDesiredVersion != tw.DesiredVersion {
		t.Errorf("after %d updates: desired $version %d, reported %s (%v); want lastDesiredVersion %d", n, tw.DesiredVersion, tw.Reported, err, n+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(last, fmt.Sprintf(`"$version":%d`, n+1)) {
		t.Errorf("the agent last saw %s, want $version %d", last, n+1)
	}
}

// Config.Agent runs with no deployment lock held: it may read
// configurations and change tags.
func TestAgentReadsAndTags(t *testing.T) {
	var s *hubtest.Server
	var mu sync.Mutex
	var seen []string
	cfg := hubemu.Config{
		Devices: func() []string { return []string{dev} },
		Agent: func(device string, _ json.RawMessage) int {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", s.URL+"/configurations/base"+api, nil)
			if err != nil {
				t.Error(err)
				return 500
			}
			resp, err := s.HTTP.Do(req)
			if err != nil {
				t.Errorf("agent GET configuration: %v", err)
				return 500
			}
			resp.Body.Close()
			if err := s.SetTags(device, json.RawMessage(`{"env":"prod","judged":true}`)); err != nil {
				t.Errorf("agent SetTags: %v", err)
			}
			mu.Lock()
			seen = append(seen, resp.Status)
			mu.Unlock()
			return 200
		},
	}
	s = start(t, func(c *hubemu.Config) { c.Devices, c.Agent = cfg.Devices, cfg.Agent })
	if err := s.SetTags(dev, json.RawMessage(`{"env":"prod"}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PUT", s.URL+"/configurations/base"+api, strings.NewReader(configBody(t, "base", "tags.env='prod'", 1, edgeContent("1.0", 10), nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("PUT with an agent that reads and tags: %v", err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != 201 || len(seen) != 1 || seen[0] != "200 OK" {
		t.Errorf("PUT = %d, agent saw %v; want 201 and one GET answered 200", resp.StatusCode, seen)
	}
	if tw, _ := s.Twin(dev, ""); !jsonEq(t, tw.Tags, `{"env":"prod","judged":true}`) {
		t.Errorf("tags %s, want the agent's", tw.Tags)
	}
}

// PATCH /twins/{d} applies tags and desired properties together or not at
// all.
func TestPatchTwinAtomic(t *testing.T) {
	s := start(t, nil)
	big := strings.Repeat("x", 33*1024)
	for _, body := range []string{
		`{"tags":{"ring":"canary"},"properties":{"desired":{"big":"` + big + `"}}}`,
		`{"tags":{"ring":"canary","big":"` + big + `"},"properties":{"desired":{"mode":"eco"}}}`,
		`{"tags":{"ring":"canary"},"properties":{"desired":{"mode":"eco"}}} {}`,
	} {
		if code, resp := call(t, s, "PATCH", "/twins/edge1"+api, body); code != 400 || !strings.Contains(string(resp), "ErrorCode:ArgumentInvalid") {
			t.Errorf("PATCH %.80s = %d %.200s, want 400 ArgumentInvalid", body, code, resp)
		}
		tw, err := s.Twin(dev, "")
		if err != nil || !jsonEq(t, tw.Tags, `{}`) || !jsonEq(t, tw.Desired, `{}`) || tw.DesiredVersion != 1 {
			t.Fatalf("twin after refused PATCH %.80s: tags %.80s, desired %.80s at %d (%v); want both untouched", body, tw.Tags, tw.Desired, tw.DesiredVersion, err)
		}
	}
}
