package hubemu_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/hubemu"
)

// Whatever body a PUT of the module registry gets, the answer is a module
// or a client error, never a server error, and a module it answers with is
// the one GET then returns.
func FuzzPutModule(f *testing.F) {
	for _, seed := range []string{
		`{"moduleId":"relay","deviceId":"edge1"}`,
		`{"moduleId":"relay","authentication":{"type":"sas","symmetricKey":{"primaryKey":"AAAAAAAAAAAAAAAAAAAAAA==","secondaryKey":"AAAAAAAAAAAAAAAAAAAAAA=="}}}`,
		`{"authentication":{"type":"selfSigned"}}`,
		`{"authentication":{"symmetricKey":{"primaryKey":"x"}}}`,
		`{"authentication":{"type":"none","symmetricKey":{"primaryKey":null,"secondaryKey":null}}}`,
		`{"authentication":{"symmetricKey":{"primaryKey":null,"secondaryKey":"AAAAAAAAAAAAAAAAAAAAAA=="}}}`,
		`{"moduleId":"other"}`, `[]`, `null`, `{`, ``,
	} {
		f.Add(seed, "")
		f.Add(seed, "*")
	}
	f.Fuzz(func(t *testing.T, body, ifMatch string) {
		s, err := hubemu.New(hubemu.Config{Key: func(d, m string) ([]byte, bool) { return []byte("device-key-0123456789abcdef"), d == "edge1" }})
		if err != nil {
			t.Fatal(err)
		}
		h := s.ServiceHandler()
		do := func(method, body, ifMatch string) *httptest.ResponseRecorder {
			r := httptest.NewRequest(method, "/devices/edge1/modules/relay?api-version=2021-04-12", strings.NewReader(body))
			if ifMatch != "" {
				r.Header.Set("If-Match", ifMatch)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		put := do(http.MethodPut, body, ifMatch)
		switch put.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed:
			if !json.Valid(put.Body.Bytes()) {
				t.Fatalf("error %d is not JSON: %q", put.Code, put.Body)
			}
			return
		default:
			t.Fatalf("PUT %q (If-Match %q) = %d %s", body, ifMatch, put.Code, put.Body)
		}
		get := do(http.MethodGet, "", "")
		var a, b map[string]any
		if get.Code != http.StatusOK || json.Unmarshal(put.Body.Bytes(), &a) != nil || json.Unmarshal(get.Body.Bytes(), &b) != nil ||
			a["etag"] != b["etag"] || a["generationId"] != b["generationId"] || a["moduleId"] != "relay" {
			t.Fatalf("PUT answered %s, GET %d %s", put.Body, get.Code, get.Body)
		}
	})
}
