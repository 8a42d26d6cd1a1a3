package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// syncBuffer is written by one goroutine and read by the test.
type syncBuffer = syncbuf.Buffer

// dpsLab is a running "edge-deploy lab dps".
type dpsLab struct {
	Endpoint, IDScope, StateDir string
	stop                        func() error
}

func startLab(t *testing.T, args ...string) *dpsLab {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"lab", "dps", "--listen", "127.0.0.1:0", "--names=false", "--json"}, args...), &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "\n") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("lab dps ended early: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("lab dps printed nothing; stderr:\n%s", stderr.String())
		}
	}
	var l dpsLab
	if err := json.Unmarshal([]byte(stdout.String()), &l); err != nil {
		cancel()
		t.Fatalf("endpoint line %q: %v", stdout.String(), err)
	}
	var once sync.Once
	var stopErr error
	l.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(10 * time.Second):
				stopErr = errors.New("lab dps did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { l.stop() })
	return &l
}

func readFile(t *testing.T, path string, mode os.FileMode) []byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s mode %v, want %v", filepath.Base(path), fi.Mode().Perm(), mode)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func softEK(t *testing.T) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tpm2.New2B(ek))
}

// The lab serves the emulator over TLS with its CA, writes what clients
// need into the state folder, and comes back with the same identity and
// data after a restart.
func TestLabDPS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	l := startLab(t, "--state-dir", dir, "--hub", "hub-a.azure-devices.net", "--hub", "hub-b.azure-devices.net=5ms", "--retry-after", "1")
	if !strings.HasPrefix(l.Endpoint, "https://127.0.0.1:") || l.StateDir != dir {
		t.Errorf("endpoint line %+v", l)
	}
	caPEM := readFile(t, filepath.Join(dir, "ca.pem"), 0o644)
	connstr := readFile(t, filepath.Join(dir, "service.connstr"), 0o600)
	scope := strings.TrimSpace(string(readFile(t, filepath.Join(dir, "idscope"), 0o644)))
	readFile(t, filepath.Join(dir, "ca.key"), 0o600)
	if scope != l.IDScope {
		t.Errorf("idscope file %q, printed %q", scope, l.IDScope)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	hc := dps.NewHTTPClient(pool)
	defer hc.CloseIdleConnections()
	conn, err := sas.ParsePolicy(string(connstr))
	if err != nil {
		t.Fatal(err)
	}
	svc := &dpsservice.Client{Conn: conn, Endpoint: l.Endpoint, HTTP: hc}
	ek := softEK(t)
	if _, err := svc.PutEnrollment(t.Context(), dpsservice.Enrollment{
		RegistrationID: "dev-1",
		Attestation:    dpsservice.Attestation{Type: "tpm", TPM: &dpsservice.TPMAttestation{EndorsementKey: ek}},
		IoTHubs:        []string{"hub-b.azure-devices.net"},
	}, ""); err != nil {
		t.Fatal(err)
	}
	// The device API answers on the same endpoint, by the name localhost
	// too.
	for _, base := range []string{l.Endpoint, strings.Replace(l.Endpoint, "127.0.0.1", "localhost", 1)} {
		resp, err := hc.Get(base + "/" + scope + "/registrations/dev-1/operations/x?api-version=2021-06-01")
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if se := dpsservice.ParseError(resp.StatusCode, body); se.HTTPStatus != 401 || se.Code != 401002 || resp.ProtoMajor != 1 {
			t.Errorf("%s: unauthenticated poll = %s %d %s, want HTTP/1.1 401 401002", base, resp.Proto, resp.StatusCode, body)
		}
	}
	hc.CloseIdleConnections()
	if err := l.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	again := startLab(t, "--state-dir", dir)
	if again.IDScope != scope {
		t.Errorf("ID scope %s after restart, was %s", again.IDScope, scope)
	}
	if b := readFile(t, filepath.Join(dir, "ca.pem"), 0o644); !bytes.Equal(b, caPEM) {
		t.Error("the CA changed across a restart")
	}
	if b := readFile(t, filepath.Join(dir, "service.connstr"), 0o600); !bytes.Equal(b, connstr) {
		t.Error("the service key changed across a restart")
	}
	svc.Endpoint = again.Endpoint
	got, err := svc.GetEnrollment(t.Context(), "dev-1")
	if err != nil {
		t.Fatalf("enrollment after restart: %v", err)
	}
	if !bytes.Equal(got.Attestation.TPM.EndorsementKey, ek) {
		t.Error("the enrollment changed across a restart")
	}
	if err := again.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"deploy"}, 2},
		{[]string{"lab"}, 2},
		{[]string{"lab", "bogus"}, 2},
		{[]string{"lab", "hub", "--route", "nameonly"}, 2},
		{[]string{"lab", "hub", "extra"}, 2},
		{[]string{"lab", "workload"}, 2},
		{[]string{"lab", "hub", "--help"}, 0},
		{[]string{"lab", "dps", "--bogus"}, 2},
		{[]string{"lab", "dps", "extra"}, 2},
		{[]string{"lab", "dps", "--retry-after", "0"}, 2},
		{[]string{"lab", "dps", "--retry-after", "301"}, 2},
		{[]string{"lab", "dps", "--hub", "h=fast"}, 2},
		{[]string{"lab", "dps", "--listen", "nocolon"}, 2},
		{[]string{"lab", "dps", "--help"}, 0},
		{[]string{"--help"}, 0},
		{[]string{"lab", "dps", "--listen", "127.0.0.1:0", "--state-dir", "/dev/null/x"}, 1},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if got := cli.ExitCode(err); got != tc.code {
			t.Errorf("run(%q) = %v, exit %d, want %d", tc.args, err, got, tc.code)
		}
		if tc.code == 0 && !strings.Contains(stdout.String(), "usage:") {
			t.Errorf("run(%q) printed no usage on stdout", tc.args)
		}
		if tc.code == 2 && stdout.Len()+stderr.Len() > 0 {
			t.Errorf("run(%q) printed %q and %q besides the error", tc.args, stdout.String(), stderr.String())
		}
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &stdout, io.Discard); err != nil || !strings.Contains(stdout.String(), cli.ExitStatus) {
		t.Errorf("edge-deploy --help = %v, does not document the exit codes:\n%s", err, stdout.String())
	}
}

func TestListenFailure(t *testing.T) {
	l := startLab(t, "--state-dir", t.TempDir())
	addr := strings.TrimPrefix(l.Endpoint, "https://")
	err := run(t.Context(), []string{"lab", "dps", "--listen", addr, "--names=false", "--state-dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || cli.ExitCode(err) != 1 {
		t.Errorf("second lab on %s = %v, want a failure", addr, err)
	}
}

// lab enroll takes 'edge-provisioner identity --json' and creates the
// enrollment through the running lab's service API.
func TestLabEnroll(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	l := startLab(t, "--state-dir", dir)
	ek := softEK(t)
	regID := tpm.RegistrationID(ek)
	idFile := filepath.Join(t.TempDir(), "identity.json")
	b, _ := json.Marshal(map[string]string{"registrationId": regID, "endorsementKey": base64.StdEncoding.EncodeToString(ek), "storageRootKey": ""})
	if err := os.WriteFile(idFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"lab", "enroll", "--state-dir", dir, "--identity", idFile, "--device-id", "press-1"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "enrolled "+regID+" in id scope "+l.IDScope) {
		t.Errorf("lab enroll printed %q", out.String())
	}
	conn, err := sas.ParsePolicy(strings.TrimSpace(string(readFile(t, filepath.Join(dir, "service.connstr"), 0o600))))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(readFile(t, filepath.Join(dir, "ca.pem"), 0o644))
	svc := &dpsservice.Client{Conn: conn, Endpoint: l.Endpoint, HTTP: dps.NewHTTPClient(pool)}
	e, err := svc.GetEnrollment(t.Context(), regID)
	if err != nil {
		t.Fatal(err)
	}
	if e.DeviceID != "press-1" || e.Attestation.TPM == nil || !bytes.Equal(e.Attestation.TPM.EndorsementKey, ek) || e.Capabilities == nil || !e.Capabilities.IoTEdge {
		t.Errorf("enrollment = %+v", e)
	}
	// Enrolling again replaces the enrollment.
	if err := run(t.Context(), []string{"lab", "enroll", "--state-dir", dir, "--identity", idFile, "--edge=false"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if e, err := svc.GetEnrollment(t.Context(), regID); err != nil || e.DeviceID != "" || e.Capabilities.IoTEdge {
		t.Errorf("re-enrolled = %+v, %v", e, err)
	}

	os.WriteFile(idFile, []byte(`{"registrationId":"x"}`), 0o600)
	if err := run(t.Context(), []string{"lab", "enroll", "--state-dir", dir, "--identity", idFile}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "identity --json") {
		t.Errorf("lab enroll without an EK = %v", err)
	}
	if err := run(t.Context(), []string{"lab", "enroll", "--state-dir", t.TempDir(), "--identity", idFile}, io.Discard, io.Discard); err == nil {
		t.Error("lab enroll without a lab succeeded")
	}
}
