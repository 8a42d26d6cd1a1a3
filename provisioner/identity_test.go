package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// identity --json carries the EK certificates and the chain a manufacturer
// stored, written here with tpm2-tools; the RSA certificate is the one
// tpm2_nvread reads.
func TestIdentityCertificates(t *testing.T) {
	sw := tpmtest.StartSwtpmWithEKCert(t)
	eccDER := sw.IssueEKCert(t, eccEK(t, sw.URI))
	sw.WriteNV(t, 0x01c0000a, eccDER)
	issuer, _ := pem.Decode(sw.IssuerCA)
	other := selfSigned(t, "another intermediate")
	sw.WriteNV(t, 0x01c00100, issuer.Bytes)
	sw.WriteNV(t, 0x01c00101, other)

	environ := map[string]string{"EDGE_TPM": sw.URI}
	out, errOut, err := runCLI(t, environ, "identity", "--json")
	if err != nil || errOut != "" {
		t.Fatalf("identity --json = %v, stderr %q", err, errOut)
	}
	var id identityJSON
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		t.Fatalf("identity --json: %v\n%s", err, out)
	}
	var nv asn1.RawValue
	if _, err := asn1.Unmarshal(sw.Tool(t, "tpm2_nvread", "0x01c00002"), &nv); err != nil {
		t.Fatalf("tpm2_nvread 0x01c00002: %v", err)
	}
	if id.EKCertificate == nil || !bytes.Equal(derPEM(t, *id.EKCertificate), nv.FullBytes) {
		t.Errorf("endorsementKeyCertificate = %v, not the certificate tpm2_nvread reads", id.EKCertificate)
	}
	if id.ECCEKCertificate == nil || !bytes.Equal(derPEM(t, *id.ECCEKCertificate), eccDER) {
		t.Errorf("eccEndorsementKeyCertificate = %v, want the one written to 0x01c0000a", id.ECCEKCertificate)
	}
	if len(id.EKChain) != 2 || !bytes.Equal(derPEM(t, id.EKChain[0]), issuer.Bytes) || !bytes.Equal(derPEM(t, id.EKChain[1]), other) {
		t.Errorf("endorsementKeyCertificateChain = %q, want the issuer CA and another, in index order", id.EKChain)
	}

	human, _, err := runCLI(t, environ, "identity")
	for _, want := range []string{
		"EK certificate:   CN=unknown, issued by CN=swtpm-localca\n",
		"ECC EK certificate: CN=unknown, issued by CN=swtpm-localca\n",
		"EK certificate chain 1: CN=swtpm-localca, issued by CN=swtpm-localca-rootca\n",
		"EK certificate chain 2: CN=another intermediate, issued by CN=another intermediate\n",
	} {
		if err != nil || !strings.Contains(human, want) {
			t.Errorf("identity = %v, without %q:\n%s", err, want, human)
		}
	}
}

// Garbage in every certificate index leaves the certificates out with a
// warning that names the index, and the identity is still printed.
func TestIdentityBadCertificates(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	for _, index := range []uint32{0x01c00002, 0x01c0000a, 0x01c00100} {
		sw.WriteNV(t, index, []byte("\x30\x82\x01\x00 not a certificate"))
	}
	environ := map[string]string{"EDGE_TPM": sw.URI}
	out, errOut, err := runCLI(t, environ, "identity", "--json")
	if err != nil {
		t.Fatalf("identity --json with bad certificates = %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("identity --json: %v\n%s", err, out)
	}
	for key, want := range map[string]string{"endorsementKeyCertificate": "null", "eccEndorsementKeyCertificate": "null", "endorsementKeyCertificateChain": "[]"} {
		if got := string(raw[key]); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if len(raw["registrationId"]) < 10 {
		t.Errorf("no registration ID: %s", out)
	}
	for _, want := range []string{"EK certificate in NV 0x01c00002", "ECC EK certificate in NV 0x01c0000a", "EK certificate chain in NV 0x01c00100"} {
		if !strings.Contains(errOut, "warning: "+want+" left out: ") {
			t.Errorf("stderr does not warn of the %s:\n%s", want, errOut)
		}
	}
	human, _, err := runCLI(t, environ, "identity")
	if err != nil || !strings.Contains(human, "Registration ID:  ") || !strings.Contains(human, "Left out:         3 certificate(s)") {
		t.Errorf("identity with bad certificates = %v\n%s", err, human)
	}
}

// eccEK creates the TPM's ECC EK from the TCG template, transient, and
// returns its public key.
func eccEK(t *testing.T, uri string) *ecdsa.PublicKey {
	t.Helper()
	tr, err := tpm.OpenTransport(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCEKTemplate),
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.FlushContext{FlushHandle: cp.ObjectHandle}).Execute(tr); err != nil {
		t.Fatal(err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PublicKey)
}

func selfSigned(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// derPEM decodes one PEM certificate, and nothing after it.
func derPEM(t *testing.T, s string) []byte {
	t.Helper()
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("not one PEM certificate: %q", s)
	}
	return b.Bytes
}
