package dpsemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/testclock"
)

// env is an emulator served over TLS with a service client.
type env struct {
	srv   *Server
	ts    *httptest.Server
	svc   *dpsservice.Client
	clock *testclock.Clock
}

// newEnv starts an emulator; cfg.Now is set to a test clock.
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	c := testclock.New(time.Now().UTC())
	cfg.Now = c.Now
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serveEnv(t, srv, c)
}

func serveEnv(t *testing.T, srv *Server, c *testclock.Clock) *env {
	t.Helper()
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return &env{
		srv:   srv,
		ts:    ts,
		clock: c,
		svc:   &dpsservice.Client{Conn: srv.ConnectionString(), Endpoint: ts.URL, HTTP: ts.Client(), Now: c.Now},
	}
}

// Software TPM keys in the TCG EK and SRK shapes, for tests that do not
// need a TPM to activate a blob (they read the challenge key from the
// server instead).
var softKeys = sync.OnceValues(func() ([3][]byte, error) {
	var out [3][]byte
	for i, tmpl := range []tpm2.TPMTPublic{tpm2.RSAEKTemplate, tpm2.RSASRKTemplate, tpm2.RSAEKTemplate} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return out, err
		}
		tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		out[i] = tpm2.Marshal(tpm2.New2B(tmpl))
	}
	return out, nil
})

// keys returns a software EK, SRK and a second EK.
func keys(t testing.TB) (ek, srk, otherEK []byte) {
	t.Helper()
	k, err := softKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k[0], k[1], k[2]
}

// enroll creates a TPM enrollment through the service API.
func (e *env) enroll(t *testing.T, enr dpsservice.Enrollment, ek []byte) *dpsservice.Enrollment {
	t.Helper()
	enr.Attestation = dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}}
	got, err := e.svc.PutEnrollment(t.Context(), enr, "")
	if err != nil {
		t.Fatalf("PutEnrollment(%s): %v", enr.RegistrationID, err)
	}
	return got
}

// response is a device API response as it was on the wire.
type response struct {
	Status int
	// RawHeader is the status line and header block, names as sent.
	RawHeader string
	Header    http.Header
	Body      []byte
}

func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body %q: %v", r.Body, err)
	}
	return m
}

// hasHeader reports whether the raw header block has the line "name: value"
// with the name spelled exactly so.
func (r *response) hasHeader(name, value string) bool {
	return strings.Contains(r.RawHeader, "\r\n"+name+": "+value+"\r\n")
}

// errorCode checks an error response: status, errorCode, the JSON content
// type and the tracking ID repeated in x-ms-request-id (docs/dps-protocol.md#errors).
func (r *response) errorCode(t *testing.T, status, code int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	m := r.json(t)
	if got, _ := m["errorCode"].(float64); int(got) != code {
		t.Errorf("errorCode %v, want %d", m["errorCode"], code)
	}
	if id, _ := m["trackingId"].(string); id == "" || r.Header.Get("X-Ms-Request-Id") != id {
		t.Errorf("trackingId %q, x-ms-request-id %q: want equal and non-empty", id, r.Header.Get("X-Ms-Request-Id"))
	}
	if _, ok := m["timestampUtc"].(string); !ok {
		t.Error("error body has no timestampUtc")
	}
	if _, ok := m["authenticationKey"]; ok {
		t.Error("error response carries an authenticationKey")
	}
	if ct := r.Header.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("Content-Type %q, want %q", ct, contentTypeJSON)
	}
	return m
}

// deviceTry sends a device API request with the headers the C SDK sends
// (docs/dps-protocol.md#endpoints-and-headers), UserAgent and no User-Agent, over its own TLS
// connection, and returns the response as it came over the wire.
func (e *env) deviceTry(ctx context.Context, method, path, auth string, body any) (*response, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ts.Certificate())
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "example.com"}}
	conn, err := d.DialContext(ctx, "tcp", e.ts.Listener.Addr().String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: example.com\r\nAccept: application/json\r\nUserAgent: prov_device_client/1.0\r\nConnection: close\r\n", method, path)
	if data != nil {
		fmt.Fprintf(&req, "Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n", len(data))
	}
	if auth != "" {
		fmt.Fprintf(&req, "Authorization: %s\r\n", auth)
	}
	req.WriteString("\r\n")
	req.Write(data)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return nil, fmt.Errorf("response cut short after %d bytes: %w", len(raw), io.ErrUnexpectedEOF)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{Status: resp.StatusCode, RawHeader: string(head) + "\r\n", Header: resp.Header, Body: b}, nil
}

func (e *env) device(t *testing.T, method, path, auth string, body any) *response {
	t.Helper()
	r, err := e.deviceTry(t.Context(), method, path, auth, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func registerPath(scope, regID, apiVersion string) string {
	return "/" + scope + "/registrations/" + regID + "/register?api-version=" + apiVersion
}

func operationPath(scope, regID, opID, apiVersion string) string {
	return "/" + scope + "/registrations/" + regID + "/operations/" + opID + "?api-version=" + apiVersion
}

// registerBody is the first PUT body of the C, Node and C# SDKs.
func registerBody(regID string, ek, srk []byte, payload any) map[string]any {
	b := map[string]any{"registrationId": regID}
	if ek != nil || srk != nil {
		b["tpm"] = map[string]any{"endorsementKey": ek, "storageRootKey": srk}
	}
	if payload != nil {
		b["payload"] = payload
	}
	return b
}

// challengeKey returns the key K the server wrapped in its last challenge
// for regID: what a TPM would activate.
func (e *env) challengeKey(t *testing.T, regID string) []byte {
	t.Helper()
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	ch := e.srv.st.Challenges[regKey(regID)]
	if ch == nil {
		t.Fatalf("no challenge stored for %s", regID)
	}
	return bytes.Clone(ch.Key)
}

// softRegister runs the device side up to the 202 with software keys and
// returns the operation ID and the token it used.
func (e *env) softRegister(t *testing.T, regID string, ek, srk []byte, payload any) (opID, token string) {
	t.Helper()
	scope := e.srv.IDScope()
	r := e.device(t, "PUT", registerPath(scope, regID, "2021-06-01"), "", registerBody(regID, ek, srk, payload))
	if r.Status != http.StatusUnauthorized || r.json(t)["authenticationKey"] == nil {
		t.Fatalf("first PUT: %d %s, want a 401 challenge", r.Status, r.Body)
	}
	token, err := sas.New(t.Context(), sas.Key(e.challengeKey(t, regID)), sas.DPSResource(scope, regID), sas.RegistrationKeyName, e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r = e.device(t, "PUT", registerPath(scope, regID, "2021-06-01"), token, registerBody(regID, ek, srk, payload))
	if r.Status != http.StatusAccepted {
		t.Fatalf("authorised PUT: %d %s, want 202", r.Status, r.Body)
	}
	opID, _ = r.json(t)["operationId"].(string)
	return opID, token
}

// poll GETs the operation once.
func (e *env) poll(t *testing.T, regID, opID, token string) *response {
	t.Helper()
	return e.device(t, "GET", operationPath(e.srv.IDScope(), regID, opID, "2021-06-01"), token, nil)
}

// result decodes a final operation status.
func result(t *testing.T, r *response) (string, *registrationResult) {
	t.Helper()
	var st struct {
		OperationID       string              `json:"operationId"`
		Status            string              `json:"status"`
		RegistrationState *registrationResult `json:"registrationState"`
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		t.Fatalf("operation body %s: %v", r.Body, err)
	}
	if st.RegistrationState == nil {
		t.Fatalf("operation body %s has no registrationState", r.Body)
	}
	return st.Status, st.RegistrationState
}
