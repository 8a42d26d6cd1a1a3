package dpsservice

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// seen is what the test server received.
type seen struct {
	method, path, query, ifMatch, contentType string
	tokenErr                                  error
	body                                      []byte
}

func testServer(t *testing.T, key []byte, host string, status int, respBody string) (*httptest.Server, func() seen) {
	t.Helper()
	var (
		mu   sync.Mutex
		last seen
	)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := seen{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery, ifMatch: r.Header.Get("If-Match"), contentType: r.Header.Get("Content-Type"), body: body}
		tok, err := sas.Parse(r.Header.Get("Authorization"))
		if err == nil && tok.KeyName != OwnerKeyName {
			err = errors.New("skn " + tok.KeyName)
		}
		if err == nil {
			err = tok.MatchAudience(host)
		}
		if err == nil {
			err = tok.Verify(key, time.Now())
		}
		if err == nil && time.Until(time.Unix(tok.Expiry, 0)) > time.Hour+time.Minute {
			err = errors.New("token lives over an hour")
		}
		s.tokenErr = err
		mu.Lock()
		last = s
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, respBody)
	}))
	t.Cleanup(ts.Close)
	return ts, func() seen { mu.Lock(); defer mu.Unlock(); return last }
}

func TestClientRequests(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	host := "lab-dps.azure-devices-provisioning.net"
	ek := []byte{1, 2, 3}
	stored := `{"registrationId":"dev 1","attestation":{"type":"tpm","tpm":{"endorsementKey":"AQID"}},"provisioningStatus":"enabled","etag":"\"e1\"","createdDateTimeUtc":"2026-01-02T03:04:05.1234567Z"}`
	for _, tc := range []struct {
		name    string
		call    func(c *Client) (*Enrollment, error)
		method  string
		ifMatch string
		body    bool
	}{
		{"put", func(c *Client) (*Enrollment, error) {
			return c.PutEnrollment(t.Context(), Enrollment{RegistrationID: "dev 1", Attestation: Attestation{Type: "tpm", TPM: &TPMAttestation{EndorsementKey: ek}}}, `"e0"`)
		}, "PUT", `"e0"`, true},
		{"get", func(c *Client) (*Enrollment, error) { return c.GetEnrollment(t.Context(), "dev 1") }, "GET", "", false},
		{"delete", func(c *Client) (*Enrollment, error) { return nil, c.DeleteEnrollment(t.Context(), "dev 1", "*") }, "DELETE", "*", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status := 200
			if tc.method == "DELETE" {
				status = 204
			}
			ts, last := testServer(t, key, host, status, stored)
			c := &Client{Conn: ConnectionString{HostName: host, KeyName: OwnerKeyName, Key: key}, Endpoint: ts.URL, HTTP: ts.Client()}
			got, err := tc.call(c)
			if err != nil {
				t.Fatal(err)
			}
			s := last()
			if s.method != tc.method || s.path != "/enrollments/dev%201" || s.query != "api-version=2021-10-01" || s.ifMatch != tc.ifMatch {
				t.Errorf("request %s %s?%s If-Match %q", s.method, s.path, s.query, s.ifMatch)
			}
			if s.tokenErr != nil {
				t.Errorf("token: %v", s.tokenErr)
			}
			if tc.body {
				var m map[string]any
				if err := json.Unmarshal(s.body, &m); err != nil || m["registrationId"] != "dev 1" || s.contentType != "application/json; charset=utf-8" {
					t.Errorf("body %s (%v), Content-Type %q", s.body, err, s.contentType)
				}
				att, _ := m["attestation"].(map[string]any)
				tpm, _ := att["tpm"].(map[string]any)
				if tpm["endorsementKey"] != base64.StdEncoding.EncodeToString(ek) {
					t.Errorf("endorsementKey sent as %v, want standard base64", tpm["endorsementKey"])
				}
				for _, absent := range []string{"etag", "createdDateTimeUtc", "registrationState", "initialTwin"} {
					if _, ok := m[absent]; ok {
						t.Errorf("empty %s was sent", absent)
					}
				}
			} else if len(s.body) != 0 || s.contentType != "" {
				t.Errorf("%s sent a body or Content-Type", tc.method)
			}
			if tc.method != "DELETE" && (got == nil || got.ETag != `"e1"` || got.CreatedDateTimeUTC.Nanosecond() != 123456700) {
				t.Errorf("decoded %+v", got)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	key := []byte("k")
	ts, _ := testServer(t, key, "h", 404, `{"errorCode":404201,"trackingId":"t1","message":"Enrollment not found."}`)
	c := &Client{Conn: ConnectionString{HostName: "h", KeyName: OwnerKeyName, Key: key}, Endpoint: ts.URL, HTTP: ts.Client()}
	_, err := c.GetEnrollment(t.Context(), "dev-1")
	var se *ServiceError
	if !errors.As(err, &se) || se.HTTPStatus != 404 || se.Code != 404201 || se.TrackingID != "t1" {
		t.Errorf("GetEnrollment = %v, want a ServiceError 404 404201", err)
	}
	if !strings.Contains(err.Error(), `"dev-1"`) {
		t.Errorf("error %q does not name the enrollment", err)
	}

	bad, _ := testServer(t, key, "h", 200, `not json`)
	c.Endpoint = bad.URL
	c.HTTP = bad.Client()
	if _, err := c.GetEnrollment(t.Context(), "dev-1"); err == nil || errors.As(err, &se) {
		t.Errorf("undecodable 200 = %v, want a decode error", err)
	}
	if _, err := c.GetEnrollment(t.Context(), ""); err == nil {
		t.Error("empty registration ID accepted")
	}
	if _, err := (&Client{}).GetEnrollment(t.Context(), "dev-1"); err == nil {
		t.Error("a client without a connection string sent a request")
	}
	// The default endpoint is https://HostName.
	if _, err := (&Client{Conn: ConnectionString{HostName: "127.0.0.1:1", KeyName: "p", Key: key}}).GetEnrollment(t.Context(), "dev-1"); err == nil || !strings.Contains(err.Error(), "https://127.0.0.1:1/enrollments/dev-1") {
		t.Errorf("default endpoint: %v", err)
	}
}
