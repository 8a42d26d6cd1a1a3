package hubservice

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/sas"
)

var testKey = []byte("hub-service-key-0123456789abcdef")

const host = "lab-hub.azure-devices.net"

// serve is IoT Hub as far as the client can tell: it checks the token and
// api-version and records each request.
func serve(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) *Client {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := sas.Parse(r.Header.Get("Authorization"))
		if err != nil || tok.KeyName != "iothubowner" || tok.MatchAudience(host) != nil || tok.Verify(testKey, time.Now()) != nil {
			t.Errorf("%s %s: bad token (%v)", r.Method, r.URL.Path, err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("api-version") != APIVersion {
			t.Errorf("%s %s: api-version %q", r.Method, r.URL, r.URL.Query().Get("api-version"))
		}
		body, _ := io.ReadAll(r.Body)
		h(w, r, body)
	}))
	t.Cleanup(ts.Close)
	return &Client{Conn: sas.Policy{HostName: host, KeyName: "iothubowner", Key: testKey}, Endpoint: ts.URL, HTTP: ts.Client()}
}

func TestConfigurations(t *testing.T) {
	var gotIfMatch, gotPath, gotMethod string
	var gotBody []byte
	c := serve(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		gotMethod, gotPath, gotIfMatch, gotBody = r.Method, r.URL.EscapedPath(), r.Header.Get("If-Match"), body
		switch r.Method {
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case http.MethodGet:
			if r.URL.Path == "/configurations" {
				if r.URL.Query().Get("top") != "5" {
					t.Errorf("top = %q", r.URL.Query().Get("top"))
				}
				io.WriteString(w, `[{"id":"a","priority":1,"content":{}},{"id":"b","priority":2,"content":{}}]`)
				return
			}
			fallthrough
		default:
			io.WriteString(w, `{"id":"relay-v2","priority":10,"targetCondition":"tags.ring='canary'","content":{"modulesContent":{}},"etag":"AAA","systemMetrics":{"results":{"targetedCount":10,"appliedCount":9}}}`)
		}
	})
	ctx := t.Context()
	out, err := c.PutConfiguration(ctx, Configuration{ID: "relay-v2", Priority: 10, TargetCondition: "tags.ring='canary'",
		Content: json.RawMessage(`{"modulesContent":{}}`), Metrics: &Metrics{Queries: map[string]string{"ok": "SELECT deviceId FROM devices"}}}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if gotMethod != http.MethodPut || gotPath != "/configurations/relay-v2" || gotIfMatch != "*" {
		t.Errorf("request %s %s If-Match %q", gotMethod, gotPath, gotIfMatch)
	}
	var sent map[string]any
	if err := json.Unmarshal(gotBody, &sent); err != nil || sent["targetCondition"] != "tags.ring='canary'" || sent["metrics"] == nil {
		t.Errorf("body %s", gotBody)
	}
	if out.ETag != "AAA" || out.SystemMetrics.Results["appliedCount"] != 9 {
		t.Errorf("PutConfiguration = %+v", out)
	}
	if _, err := c.GetConfiguration(ctx, "a b/c"); err != nil || gotPath != "/configurations/a%20b%2Fc" {
		t.Errorf("GetConfiguration: %v, path %s", err, gotPath)
	}
	list, err := c.ListConfigurations(ctx, 5)
	if err != nil || len(list) != 2 || list[1].ID != "b" {
		t.Errorf("ListConfigurations = %+v, %v", list, err)
	}
	// The ETag as the JSON has it goes out quoted, as IoT Hub wants it.
	if err := c.DeleteConfiguration(ctx, "relay-v2", out.ETag); err != nil || gotMethod != http.MethodDelete || gotIfMatch != `"AAA"` {
		t.Errorf("DeleteConfiguration: %v (%s If-Match %s)", err, gotMethod, gotIfMatch)
	}
}

func TestApplyAndTwins(t *testing.T) {
	var got []string
	c := serve(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+string(body))
		if strings.HasSuffix(r.URL.Path, "applyConfigurationContent") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		io.WriteString(w, `{"deviceId":"edge-1","tags":{"ring":"canary"}}`)
	})
	ctx := t.Context()
	content := json.RawMessage(`{"modulesContent":{"$edgeAgent":{}}}`)
	if err := c.ApplyConfigurationContent(ctx, "edge-1", content); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateTwin(ctx, "edge-1", "", json.RawMessage(`{"tags":{"ring":"canary"}}`)); err != nil {
		t.Fatal(err)
	}
	tw, err := c.Twin(ctx, "edge-1", "$edgeAgent")
	if err != nil || !strings.Contains(string(tw), "canary") {
		t.Fatalf("Twin = %s, %v", tw, err)
	}
	want := []string{
		`POST /devices/edge-1/applyConfigurationContent {"modulesContent":{"$edgeAgent":{}}}`,
		`PATCH /twins/edge-1 {"tags":{"ring":"canary"}}`,
		`GET /twins/edge-1/modules/$edgeAgent `,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestErrors(t *testing.T) {
	status, body, header := 0, "", ""
	c := serve(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if header != "" {
			w.Header().Set("iothub-errorcode", header)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
	for _, tc := range []struct {
		status             int
		body, header, code string
		msg                string
		number             int
	}{
		{412, `{"Message":"ErrorCode:PreconditionFailed;Precondition failed: etag mismatch","ExceptionMessage":""}`, "", "PreconditionFailed", "etag mismatch", 0},
		{401, `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized"}`, "", "IotHubUnauthorizedAccess", "Unauthorized", 0},
		{404, `{"Message":"no code here"}`, "", "", "no code here", 0},
		{502, `<html>bad gateway</html>`, "", "", "bad gateway", 0},
		// A direct method on a device that is not connected.
		{404, `{"Message":"{\"errorCode\":404103,\"trackingId\":\"t\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"2026-12-08T02:20:00Z\"}","ExceptionMessage":""}`,
			"DeviceNotOnline", "DeviceNotOnline", "Timed out waiting for device to connect.", 404103},
	} {
		status, body, header = tc.status, tc.body, tc.header
		_, err := c.GetConfiguration(t.Context(), "x")
		var se *ServiceError
		if !errors.As(err, &se) || se.HTTPStatus != tc.status || se.Code != tc.code || se.Number != tc.number || !strings.Contains(se.Message, tc.msg) {
			t.Errorf("HTTP %d %s: %v", tc.status, tc.body, err)
		}
		if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(testKey)) || strings.Contains(err.Error(), "sig=") {
			t.Errorf("error carries a secret: %v", err)
		}
	}
	if _, err := (&Client{}).GetConfiguration(t.Context(), "x"); err == nil {
		t.Error("a client without a connection string sent a request")
	}
}

func FuzzParseError(f *testing.F) {
	f.Add(412, []byte(`{"Message":"ErrorCode:PreconditionFailed;x"}`))
	f.Add(500, []byte(`{"Message":"ErrorCode:"}`))
	f.Add(400, []byte(`garbage`))
	f.Add(404, []byte(`{"Message":"{\"errorCode\":404103,\"message\":\"Timed out\"}"}`))
	f.Fuzz(func(t *testing.T, status int, data []byte) {
		e := parseError(status, "", data)
		if e.HTTPStatus != status || len(e.Message) > 310 {
			t.Fatalf("parseError = %+v", e)
		}
		_ = e.Error()
	})
}
