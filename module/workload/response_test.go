package workload

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
)

var digest32 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

var digestCases = []struct {
	body string
	ok   bool
}{
	{`{"digest":"` + digest32 + `"}`, true},
	{`{"digest":"` + digest32 + `","extra":1}`, true},
	{`{"digest":"aGk="}`, false}, // not 32 bytes
	{`{"digest":"` + strings.TrimRight(digest32, "=") + `"}`, false},
	{`{"digest":"!!"}`, false},
	{`{"digest":null}`, false},
	{`{"digest":5}`, false},
	{`{}`, false},
	{`{"message":"forbidden"}`, false},
	{``, false},
	{`[`, false},
}

func TestParseDigest(t *testing.T) {
	for _, tc := range digestCases {
		d, err := parseDigest([]byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("parseDigest(%q) = %x, %v, want ok %v", tc.body, d, err, tc.ok)
		}
		if err != nil && !errors.Is(err, errResponse) {
			t.Errorf("parseDigest(%q) = %v, want %v", tc.body, err, errResponse)
		}
	}
}

func bundleCases(t testing.TB) []struct {
	body string
	ok   bool
} {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	js := func(s string) string { b, _ := json.Marshal(map[string]string{"certificate": s}); return string(b) }
	pemCA := string(ca.CertPEM())
	return []struct {
		body string
		ok   bool
	}{
		{js(pemCA), true},
		{js(pemCA + pemCA), true},
		{js("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + pemCA), true},
		{js(base64.StdEncoding.EncodeToString([]byte(pemCA))), false}, // base64 of PEM, as the swagger says
		{js(""), false},
		{js("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false},
		{js(pemCA + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false},
		{`{"certificate":null}`, false},
		{`{}`, false},
		{`x`, false},
	}
}

func TestParseTrustBundle(t *testing.T) {
	for _, tc := range bundleCases(t) {
		b, err := parseTrustBundle([]byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("parseTrustBundle(%.60q) = %v, want ok %v", tc.body, err, tc.ok)
		}
		if err == nil && !x509.NewCertPool().AppendCertsFromPEM(b) {
			t.Errorf("parseTrustBundle(%.60q) returned no usable certificate", tc.body)
		}
	}
}

var errorCases = []struct {
	status int
	body   string
	want   string
}{
	{403, `{"message":"forbidden"}`, "forbidden"},
	{400, `{"message":"invalid api-version \"x\""}`, `invalid api-version "x"`},
	{404, ``, ""},
	{502, "  <html>bad gateway</html>\n", "<html>bad gateway</html>"},
	{500, `{"message":5}`, `{"message":5}`},
	{500, strings.Repeat("é", 150), strings.Repeat("é", 100)},
	{500, "\xff\xfe", "\uFFFD"}, // one replacement per invalid run
}

func TestParseError(t *testing.T) {
	for _, tc := range errorCases {
		e := parseError(tc.status, []byte(tc.body))
		if e.Status != tc.status || e.Message != tc.want {
			t.Errorf("parseError(%d, %q) = %+v, want message %q", tc.status, tc.body, e, tc.want)
		}
	}
	if got := (&Error{Status: 404}).Error(); got != "workload API answered 404 Not Found" {
		t.Errorf("Error() without a message = %q", got)
	}
	if got := (&Error{Status: 403, Message: "forbidden"}).Error(); got != "workload API answered 403: forbidden" {
		t.Errorf("Error() = %q", got)
	}
}

// Answers from outside: never a panic; what is accepted is what Sign and
// TrustBundle promise.
func FuzzParseResponse(f *testing.F) {
	for _, tc := range digestCases {
		f.Add(200, tc.body)
	}
	for _, tc := range bundleCases(f) {
		f.Add(200, tc.body)
	}
	for _, tc := range errorCases {
		f.Add(tc.status, tc.body)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		if d, err := parseDigest([]byte(body)); err == nil && len(d) != 32 {
			t.Fatalf("parseDigest(%q) = %d bytes", body, len(d))
		}
		if b, err := parseTrustBundle([]byte(body)); err == nil && !x509.NewCertPool().AppendCertsFromPEM(b) {
			t.Fatalf("parseTrustBundle(%q) holds no certificate", body)
		}
		e := parseError(status, []byte(body))
		if e == nil || e.Status != status || e.Error() == "" {
			t.Fatalf("parseError(%d, %q) = %v", status, body, e)
		}
		if !json.Valid([]byte(body)) && (!utf8.ValidString(e.Message) || len(e.Message) > 3*maxMessage) {
			t.Fatalf("parseError(%d, %q) message %q not clipped to valid UTF-8", status, body, e.Message)
		}
	})
}
