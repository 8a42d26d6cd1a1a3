package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

func runCLI(t testing.TB, environ map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	// Never read or write the machine's own assignment or settings.
	dir := t.TempDir()
	defaults := map[string]string{
		"EDGE_PROVISIONER_STATE":  filepath.Join(dir, "assignment.json"),
		"EDGE_PROVISIONER_CONFIG": filepath.Join(dir, "empty.toml"),
	}
	if err := os.WriteFile(defaults["EDGE_PROVISIONER_CONFIG"], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if v, ok := environ[k]; ok {
			return v
		}
		return defaults[k]
	}
	err = run(t.Context(), args, &out, &errOut, getenv)
	return out.String(), errOut.String(), err
}

type identityJSON struct {
	RegistrationID   string   `json:"registrationId"`
	EndorsementKey   string   `json:"endorsementKey"`
	StorageRootKey   string   `json:"storageRootKey"`
	EKCertificate    *string  `json:"endorsementKeyCertificate"`
	ECCEKCertificate *string  `json:"eccEndorsementKeyCertificate"`
	EKChain          []string `json:"endorsementKeyCertificateChain"`
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"identity", "--nope"},
		{"identity", "extra"},
		{"token", "--tpm", "mssim://127.0.0.1:2321"},
		{"token", "--tpm", "mssim://127.0.0.1:2321", "--hub", "h"},
		{"token", "--tpm", "mssim://127.0.0.1:2321", "--hub", "h", "--device", "d", "--ttl", "-1s"},
		{"identity", "--tpm", "mssim://127.0.0.1:2321", "--auth-key-index", "0x800000"},
	} {
		out, errOut, err := runCLI(t, nil, args...)
		if cli.ExitCode(err) != 2 {
			t.Errorf("edge-provisioner %q: exit %d (%v), want 2", args, cli.ExitCode(err), err)
		}
		// The error alone, printed once by cli.Report.
		if out != "" || errOut != "" {
			t.Errorf("edge-provisioner %q printed %q and %q besides the error", args, out, errOut)
		}
	}
	for _, args := range [][]string{{"--help"}, {"identity", "--help"}, {"token", "-h"}} {
		out, errOut, err := runCLI(t, nil, args...)
		if err != nil || !strings.Contains(out, "usage: edge-provisioner") || errOut != "" {
			t.Errorf("edge-provisioner %q = %v, output %q, stderr %q", args, err, out, errOut)
		}
	}
	if out, _, _ := runCLI(t, nil, "--help"); !strings.Contains(out, cli.ExitStatus) {
		t.Errorf("edge-provisioner --help does not document the exit codes:\n%s", out)
	}
}

// identity, then a key activated as DPS would, then a token signed inside
// the TPM that verifies with that key.
func TestIdentityAndToken(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	environ := map[string]string{"EDGE_TPM": sw.URI}
	out, _, err := runCLI(t, environ, "identity", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var id identityJSON
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		t.Fatalf("identity --json: %v\n%s", err, out)
	}
	ek, err := base64.StdEncoding.DecodeString(id.EndorsementKey)
	if err != nil || tpm.RegistrationID(ek) != id.RegistrationID || id.EKCertificate != nil {
		t.Fatalf("identity --json = %+v (%v)", id, err)
	}
	human, _, err := runCLI(t, environ, "identity")
	if err != nil || !strings.Contains(human, "Registration ID:  "+id.RegistrationID) || !strings.Contains(human, id.EndorsementKey) ||
		!strings.Contains(human, "IoT Edge device") {
		t.Errorf("identity = %v\n%s", err, human)
	}

	// The auth key index flag moves the key; activate there.
	srk, _ := base64.StdEncoding.DecodeString(id.StorageRootKey)
	key := make([]byte, 32)
	rand.Read(key)
	blob, err := activation.Build(rand.Reader, ek, srk, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open(sw.URI, tpm.Config{AuthKeyHandle: tpm.AuthKeyBase + 0x101})
	if err != nil {
		t.Fatal(err)
	}
	err = tp.ImportKey(t.Context(), blob)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, environ, "token", "--hub", "hub.example", "--device", "dev1"); !errors.Is(err, tpm.ErrNoAuthKey) || cli.ExitCode(err) != 1 {
		t.Errorf("token at the default index = %v, want ErrNoAuthKey", err)
	}
	out, _, err = runCLI(t, environ, "token", "--hub", "hub.example", "--device", "dev1", "--module", "relay", "--ttl", "10m", "--auth-key-index", "0x101")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.MatchAudience(sas.ModuleResource("hub.example", "dev1", "relay")); err != nil {
		t.Error(err)
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		t.Errorf("token signed in the TPM does not verify with the activated key: %v", err)
	}
	if d := time.Until(time.Unix(tok.Expiry, 0)); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("token expires in %v, want 10m", d)
	}
}

// Hierarchy passwords come from a file or the environment.
func TestHierarchyPasswordSources(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	tp, err := tpm.OpenTransport(sw.URI)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.HierarchyChangeAuth{AuthHandle: tpm2.TPMRHEndorsement, NewAuth: tpm2.TPM2BAuth{Buffer: []byte("pw")}}.Execute(tp)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, map[string]string{"EDGE_TPM": sw.URI}, "identity"); !errors.Is(err, tpm.ErrAuthorization) {
		t.Fatalf("identity without the password = %v, want ErrAuthorization", err)
	}
	file := filepath.Join(t.TempDir(), "endorsement")
	if err := os.WriteFile(file, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, map[string]string{"EDGE_TPM": sw.URI}, "identity", "--endorsement-auth-file", file); err != nil {
		t.Errorf("identity with the password in a file: %v", err)
	}
	if _, _, err := runCLI(t, map[string]string{"EDGE_TPM": sw.URI, "EDGE_TPM_ENDORSEMENT_AUTH": "pw"}, "identity"); err != nil {
		t.Errorf("identity with the password in the environment: %v", err)
	}
}
