package workloademu

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Sign request bodies from outside: never a panic, only the statuses of
// docs/edge-protocol.md#workload-api, a JSON answer, and a 200 only with the right HMAC
// over the data a plain JSON reading finds.
func FuzzSignRequest(f *testing.F) {
	for _, seed := range []struct{ body, ctype string }{
		{signBody, noCT},
		{`{"data":"aGVsbG8="}`, "application/json; charset=utf-8"},
		{`["aGVsbG8="]`, noCT},
		{`{"data":"aGk=","data":"aGk="}`, noCT},
		{`{"Data":"aGk=","data":"aGk="}`, noCT},
		{`{"data":null}`, noCT},
		{`{"data":"not base64!"}`, noCT},
		{`{"data":`, noCT},
		{"{\"data\":\"\xff\"}", noCT},
		{signBody, "text/plain"},
		{"", noCT},
		{`null`, noCT},
	} {
		f.Add(seed.body, seed.ctype)
	}
	s := newServer(f, Config{})
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body, ctype string) {
		if strings.ContainsAny(ctype, "\r\n") {
			return // not a header value
		}
		w := call(h, "POST", signPath+v, ctype, body)
		switch w.Code {
		case 200, 400, 422:
		default:
			t.Fatalf("status %d for %q (%q): %s", w.Code, body, ctype, w.Body)
		}
		var rsp struct {
			Digest  *string
			Message *string
		}
		if err := json.Unmarshal(w.Body.Bytes(), &rsp); err != nil || (rsp.Digest == nil) == (rsp.Message == nil) {
			t.Fatalf("answer is neither a digest nor an error: %s", w.Body)
		}
		if w.Code != 200 {
			return
		}
		if !json.Valid([]byte(body)) || !utf8.ValidString(body) {
			t.Fatalf("invalid JSON %q signed", body)
		}
		data, ok := plainData([]byte(body))
		if !ok {
			t.Fatalf("%q signed, but holds no data string", body)
		}
		raw, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatalf("%q signed, but data is not base64", body)
		}
		m := hmac.New(sha256.New, filterKey)
		m.Write(raw)
		if want := base64.StdEncoding.EncodeToString(m.Sum(nil)); *rsp.Digest != want {
			t.Fatalf("digest for %q = %s, want %s", body, *rsp.Digest, want)
		}
	})
}

// plainData reads data the simple way: the exact key of an object (the
// last one if repeated), or the first element of an array.
func plainData(body []byte) (string, bool) {
	var s string
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var arr []json.RawMessage
		if json.Unmarshal(body, &arr) != nil || len(arr) == 0 || json.Unmarshal(arr[0], &s) != nil {
			return "", false
		}
		return s, true
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil || obj["data"] == nil || json.Unmarshal(obj["data"], &s) != nil {
		return "", false
	}
	return s, true
}

// Request targets from outside: routing and api-version parsing never
// panic, and what goes back into a message is valid, printable UTF-8.
func FuzzTarget(f *testing.F) {
	for _, seed := range []string{
		signPath + v,
		"/modules/%24edgeHub/genid/1/certificate/server?api-version=2019-01-30",
		"/modules/filtermodule/certificate/identity?x=1&api-version=a%22b%5C%0A%01",
		"/trust-bundle?api-version=2022-08-03;x=1&api-version=%zz+",
		"/modules/%ff/genid//sign?api-version",
		"/modules/%C3%28/genid/%/sign?&&=&api%2Dversion=%E2%82",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, target string) {
		path, query, _ := strings.Cut(target, "?")
		if rt, ok := matchRoute(path); ok && rt.kind.moduleRoute() && !utf8.ValidString(rt.module) {
			t.Fatalf("module %q from %q is not UTF-8", rt.module, path)
		}
		ver, _ := queryParam(query, "api-version")
		q := debugQuote(ver)
		if !utf8.ValidString(q) || !strings.HasPrefix(q, `"`) || !strings.HasSuffix(q, `"`) || len(q) < 2 {
			t.Fatalf("debugQuote(%q) = %q", ver, q)
		}
		for _, r := range q {
			if !unicode.IsPrint(r) && r != ' ' {
				t.Fatalf("debugQuote(%q) = %q holds %U", ver, q, r)
			}
		}
	})
}
