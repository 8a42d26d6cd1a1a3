package workloademu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	filterKey = []byte("filtermodule-key-0123456789abcdef")
	hubKey    = []byte("edgehub-key-0123456789abcdef0123")
)

func keys(m string) ([]byte, bool) {
	switch m {
	case "filtermodule":
		return filterKey, true
	case "$edgeHub":
		return hubKey, true
	}
	return nil, false
}

func digest(key []byte, data string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = keys
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// noCT leaves Content-Type out; http-common then parses the body as JSON.
const noCT = "-"

func call(h http.Handler, method, target, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != noCT {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func msg(s string) string {
	b, _ := json.Marshal(errorBody{Message: s})
	return strings.ReplaceAll(string(b), `\u0026`, "&")
}

const (
	v        = "?api-version=2022-08-03"
	signPath = "/modules/filtermodule/genid/637862958472233925/sign"
	signBody = `{"keyId":"primary","algo":"HMACSHA256","data":"aGVsbG8="}` // "hello"
)

// Every route and every error of docs/edge-protocol.md#workload-api, through Handler.
func TestHandler(t *testing.T) {
	ca := newCA(t)
	s := newServer(t, Config{CA: ca})
	h := s.Handler()
	hello := `{"digest":"` + digest(filterKey, "hello") + `"}`
	pemJSON, _ := json.Marshal(trustBundleResponse{Certificate: string(ca.CertPEM())})
	for _, tc := range []struct {
		name, method, target, ctype, body string
		status                            int
		want                              string
	}{
		{"sign", "POST", signPath + v, noCT, signBody, 200, hello},
		{"sign json charset", "POST", signPath + v, "application/json; charset=utf-8", signBody, 200, hello},
		{"sign only data", "POST", signPath + v, "application/json", `{"data":"aGVsbG8="}`, 200, hello},
		{"sign unknown fields ignored", "POST", signPath + v, noCT, `{"data":"aGVsbG8=","x":{"y":[1,null]}}`, 200, hello},
		{"sign as a sequence", "POST", signPath + v, noCT, ` ["aGVsbG8="] `, 200, hello},
		{"sign empty data", "POST", signPath + v, noCT, `{"data":""}`, 200, `{"digest":"` + digest(filterKey, "") + `"}`},
		{"sign percent-encoded module", "POST", "/modules/%24edgeHub/genid/1/sign" + v, noCT, signBody, 200, `{"digest":"` + digest(hubKey, "hello") + `"}`},
		{"sign lowercase escape", "POST", "/modules/filter%6dodule/genid/1/sign" + v, noCT, signBody, 200, hello},
		{"sign raw $ module", "POST", "/modules/$edgeHub/genid/1/sign" + v, noCT, signBody, 200, `{"digest":"` + digest(hubKey, "hello") + `"}`},
		{"sign genid anything", "POST", "/modules/filtermodule/genid/%C3%28/sign" + v, noCT, signBody, 200, hello},

		{"no api-version", "POST", signPath, noCT, signBody, 400, msg("api-version not specified")},
		{"no api-version, unknown route", "GET", "/nowhere", noCT, "", 400, msg("api-version not specified")},
		{"api-version misspelt", "GET", "/trust-bundle?api_version=2022-08-03", noCT, "", 400, msg("api-version not specified")},
		{"unknown api-version", "POST", signPath + "?api-version=2020-01-01", noCT, signBody, 400, msg(`invalid api-version "2020-01-01"`)},
		{"empty api-version", "GET", "/trust-bundle?api-version=", noCT, "", 400, msg(`invalid api-version ""`)},
		{"api-version quoted like Rust", "GET", "/trust-bundle?api-version=a%22b%5C%0A%01", noCT, "", 400, msg(`invalid api-version "a\"b\\\n\u{1}"`)},
		{"api-version plus is space", "GET", "/trust-bundle?api-version=2022-08-03+", noCT, "", 400, msg(`invalid api-version "2022-08-03 "`)},
		{"api-version semicolon kept", "GET", "/trust-bundle?api-version=2022-08-03;x=1", noCT, "", 400, msg(`invalid api-version "2022-08-03;x=1"`)},
		{"last api-version wins", "GET", "/trust-bundle?api-version=bad&api-version=2018-06-28", noCT, "", 200, string(pemJSON)},
		{"last api-version wins, bad", "GET", "/trust-bundle?api-version=2018-06-28&api-version=bad", noCT, "", 400, msg(`invalid api-version "bad"`)},
		{"encoded api-version name", "GET", "/trust-bundle?api%2Dversion=2019-01-30&x=y", noCT, "", 200, string(pemJSON)},

		{"unknown route", "GET", "/nowhere" + v, noCT, "", 404, msg("not found")},
		{"list modules not emulated", "GET", "/modules" + v, noCT, "", 404, msg("not found")},
		{"encrypt not emulated", "POST", "/modules/filtermodule/genid/1/encrypt" + v, noCT, "{}", 404, msg("not found")},
		{"empty module", "POST", "/modules//genid/1/sign" + v, noCT, signBody, 404, msg("not found")},
		{"empty genid", "POST", "/modules/filtermodule/genid//sign" + v, noCT, signBody, 404, msg("not found")},
		{"trailing slash", "POST", signPath + "/" + v, noCT, signBody, 404, msg("not found")},
		{"extra prefix", "POST", "/a" + signPath + v, noCT, signBody, 404, msg("not found")},
		{"module not UTF-8", "POST", "/modules/%ff/genid/1/sign" + v, noCT, signBody, 404, msg("not found")},
		{"trust bundle trailing slash", "GET", "/trust-bundle/" + v, noCT, "", 404, msg("not found")},

		{"GET on sign", "GET", signPath + v, noCT, "", 400, msg("method not allowed")},
		{"PATCH on sign", "PATCH", signPath + v, noCT, signBody, 400, msg("method not allowed")},
		{"POST on trust bundle", "POST", "/trust-bundle" + v, noCT, "{}", 400, msg("method not allowed")},
		{"POST bad JSON on trust bundle", "POST", "/trust-bundle" + v, noCT, "{", 422, msg("expected value")},
		{"DELETE on sign", "DELETE", signPath + v, noCT, "", 400, msg("method not allowed")},
		{"DELETE bad JSON", "DELETE", signPath + v, noCT, "{", 422, msg("expected value")},
		{"DELETE bad JSON, not JSON type", "DELETE", signPath + v, "text/plain", "{", 400, msg("method not allowed")},
		{"PUT not JSON", "PUT", signPath + v, "text/plain", signBody, 415, msg("request body must be application/json")},
		{"PUT empty", "PUT", signPath + v, noCT, "", 422, msg("EOF while parsing a value")},
		{"PUT JSON", "PUT", signPath + v, "application/json", "{}", 400, msg("method not allowed")},

		{"sign no body", "POST", signPath + v, noCT, "", 400, msg("missing parameter: request body")},
		{"sign body not JSON type", "POST", signPath + v, "text/plain", signBody, 400, msg("missing parameter: request body")},
		{"sign media type is case-sensitive", "POST", signPath + v, "Application/JSON", signBody, 400, msg("missing parameter: request body")},
		{"sign truncated JSON", "POST", signPath + v, noCT, `{"data":`, 422, msg("expected value")},
		{"sign trailing data", "POST", signPath + v, noCT, signBody + " x", 422, msg("expected value")},
		{"sign field case", "POST", signPath + v, noCT, `{"Data":"aGVsbG8="}`, 422, msg("missing field `data`")},
		{"sign null data", "POST", signPath + v, noCT, `{"data":null}`, 422, msg("invalid type: null, expected a string")},
		{"sign number data", "POST", signPath + v, noCT, `{"data":5}`, 422, msg("invalid type: number `5`, expected a string")},
		{"sign duplicate data", "POST", signPath + v, noCT, `{"data":"aGk=","data":"aGk="}`, 422, msg("duplicate field `data`")},
		{"sign string body", "POST", signPath + v, noCT, `"aGk="`, 422, msg("invalid type: string, expected struct SignRequest")},
		{"sign null body", "POST", signPath + v, noCT, `null`, 422, msg("invalid type: null, expected struct SignRequest")},
		{"sign empty sequence", "POST", signPath + v, noCT, `[]`, 422, msg("invalid length 0, expected struct SignRequest with 1 elements")},
		{"sign long sequence", "POST", signPath + v, noCT, `["aGk=","aGk="]`, 422, msg("trailing characters")},
		{"sign not UTF-8", "POST", signPath + v, noCT, "{\"data\":\"\xff\"}", 422, msg("invalid unicode code point")},
		{"sign bad base64", "POST", signPath + v, noCT, `{"data":"not base64!"}`, 400, msg("invalid parameter: data")},
		{"sign unpadded base64", "POST", signPath + v, noCT, `{"data":"aGVsbG8"}`, 400, msg("invalid parameter: data")},
		{"sign unknown module", "POST", "/modules/nobody/genid/1/sign" + v, noCT, signBody, 500, msg("failed to get module identity for nobody: identity not found")},
		{"sign module id is case-sensitive", "POST", "/modules/FilterModule/genid/1/sign" + v, noCT, signBody, 500, msg("failed to get module identity for FilterModule: identity not found")},

		{"trust bundle", "GET", "/trust-bundle" + v, noCT, "", 200, string(pemJSON)},
		{"trust bundle ignores body", "GET", "/trust-bundle" + v, "text/plain", "{", 200, string(pemJSON)},
		{"manifest trust bundle unset", "GET", "/manifest-trust-bundle" + v, noCT, "", 200, `{"certificate":""}`},

		{"server cert no body", "POST", "/modules/filtermodule/genid/1/certificate/server" + v, noCT, "", 400, msg("missing parameter: request body")},
		{"server cert no commonName", "POST", "/modules/filtermodule/genid/1/certificate/server" + v, noCT, `{"expiration":"2030-01-01T00:00:00Z"}`, 422, msg("missing field `commonName`")},
		{"server cert empty commonName", "POST", "/modules/filtermodule/genid/1/certificate/server" + v, noCT, `{"commonName":""}`, 500, msg("failed to generate csr")},
		{"server cert genid not UTF-8", "POST", "/modules/filtermodule/genid/%C3%28/certificate/server" + v, noCT, `{"commonName":"x"}`, 404, msg("not found")},
		{"identity cert", "POST", "/modules/filtermodule/certificate/identity" + v, noCT, "", 500, msg("failed to create cert aziot-edged/module/filtermodule:identity: not supported by the emulator")},
		{"identity cert bad JSON", "POST", "/modules/filtermodule/certificate/identity" + v, noCT, "{", 422, msg("expected value")},
		{"GET identity cert", "GET", "/modules/filtermodule/certificate/identity" + v, noCT, "", 400, msg("method not allowed")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := call(h, tc.method, tc.target, tc.ctype, tc.body)
			if w.Code != tc.status || w.Body.String() != tc.want {
				t.Errorf("%s %s %q = %d %s, want %d %s", tc.method, tc.target, tc.body, w.Code, w.Body, tc.status, tc.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s %s: Content-Type = %q, want application/json", tc.method, tc.target, ct)
			}
		})
	}
}

// Every known api-version is accepted on every route
// (docs/edge-protocol.md#workload-api: all routes accept >= 2018-06-28).
func TestAPIVersions(t *testing.T) {
	h := newServer(t, Config{CA: newCA(t)}).Handler()
	for _, ver := range []string{"2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05", "2020-07-07", "2021-12-07", "2022-08-03"} {
		for _, tc := range []struct {
			method, path, body string
			status             int
		}{
			{"POST", signPath, signBody, 200},
			{"GET", "/trust-bundle", "", 200},
			{"GET", "/manifest-trust-bundle", "", 200},
			{"POST", "/modules/filtermodule/genid/1/certificate/server", `{"commonName":"host"}`, 201},
		} {
			if w := call(h, tc.method, tc.path+"?api-version="+ver, noCT, tc.body); w.Code != tc.status {
				t.Errorf("%s %s at %s = %d %s, want %d", tc.method, tc.path, ver, w.Code, w.Body, tc.status)
			}
		}
	}
}

func TestTrustBundles(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	bundle := append(ca.CertPEM(), other.CertPEM()...)
	for _, tc := range []struct {
		name           string
		cfg            Config
		path           string
		status         int
		wantCert       string
		wantMessageSub string
	}{
		{"configured bundle over the CA", Config{CA: ca, TrustBundle: bundle}, "/trust-bundle", 200, string(bundle), ""},
		{"CA as default", Config{CA: ca}, "/trust-bundle", 200, string(ca.CertPEM()), ""},
		{"no bundle", Config{}, "/trust-bundle", 404, "", `certificate "aziot-edged-trust-bundle" not found`},
		{"manifest bundle", Config{ManifestTrustBundle: other.CertPEM()}, "/manifest-trust-bundle", 200, string(other.CertPEM()), ""},
	} {
		w := call(newServer(t, tc.cfg).Handler(), "GET", tc.path+v, noCT, "")
		var got struct{ Certificate, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if w.Code != tc.status || got.Certificate != tc.wantCert || got.Message != tc.wantMessageSub {
			t.Errorf("%s: GET %s = %d %s, want %d", tc.name, tc.path, w.Code, w.Body, tc.status)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no key source", Config{Key: nil}},
		{"negative cap", Config{Key: keys, MaxConcurrent: -1}},
		{"bundle not PEM", Config{Key: keys, TrustBundle: []byte("not a certificate")}},
		{"bundle with a key", Config{Key: keys, TrustBundle: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}},
		{"manifest bundle not PEM", Config{Key: keys, ManifestTrustBundle: []byte("x")}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("New(%s) succeeded, want an error", tc.name)
		}
	}
}

// With a pid check configured, module routes reached without a pid do not
// match, as aziot-edged's from_uri returns None (docs/edge-protocol.md#workload-api);
// the trust bundle has no pid check.
func TestHandlerWithoutPID(t *testing.T) {
	s := newServer(t, Config{CA: newCA(t), ModuleOfPID: func(int32) (string, bool) { return "filtermodule", true }})
	h := s.Handler()
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", signPath, signBody, 404},
		{"POST", "/modules/filtermodule/genid/1/certificate/server", `{"commonName":"x"}`, 404},
		{"POST", "/modules/filtermodule/certificate/identity", "", 404},
		{"GET", "/trust-bundle", "", 200},
	} {
		if w := call(h, tc.method, tc.path+v, noCT, tc.body); w.Code != tc.status {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, w.Code, w.Body, tc.status)
		}
	}
	if n := s.Requests(); n != 0 {
		t.Errorf("Requests() = %d after unmatched sign calls, want 0", n)
	}
}

func TestRequestsCountsSignCalls(t *testing.T) {
	s := newServer(t, Config{})
	h := s.Handler()
	call(h, "POST", signPath+v, noCT, signBody)
	call(h, "POST", signPath+v, noCT, "")                // 400, still a sign call
	call(h, "GET", "/trust-bundle"+v, noCT, "")          // not a sign call
	call(h, "POST", signPath+"?api-version=x", noCT, "") // rejected before routing
	if n := s.Requests(); n != 2 {
		t.Errorf("Requests() = %d, want 2", n)
	}
}
