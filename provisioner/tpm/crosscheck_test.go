package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// tpm2tools runs a tpm2-tools command against swtpm.
func tpm2tools(t *testing.T, sw *tpmtest.Swtpm, tool string, args ...string) {
	t.Helper()
	sw.Tool(t, tool, args...)
}

// The keys we persist and the signatures we make are what tpm2-tools reads
// and computes on the same swtpm.
func TestCrossCheckTPM2Tools(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := activated(t, tp)
	long := bytes.Repeat([]byte("0123456789"), 300) // beyond TPM_PT_INPUT_BUFFER
	short := []byte("0ne00000000%2Fregistrations%2F" + id.RegistrationID + "\n1767225600")
	sigShort, err := tp.Sign(t.Context(), short)
	if err != nil {
		t.Fatal(err)
	}
	sigLong, err := tp.Sign(t.Context(), long)
	if err != nil {
		t.Fatal(err)
	}
	tp.Close() // swtpm serves one client at a time

	ekFile := filepath.Join(dir, "ek.pub")
	tpm2tools(t, sw, "tpm2_readpublic", "-c", "0x81010001", "-o", ekFile)
	ek, err := os.ReadFile(ekFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ek, id.EndorsementKey) {
		t.Errorf("tpm2_readpublic EK differs from ours:\n tools %x\n ours  %x", ek, id.EndorsementKey)
	}
	srkFile := filepath.Join(dir, "srk.pub")
	tpm2tools(t, sw, "tpm2_readpublic", "-c", "0x81000001", "-o", srkFile)
	if srk, _ := os.ReadFile(srkFile); !bytes.Equal(srk, id.StorageRootKey) {
		t.Errorf("tpm2_readpublic SRK differs from ours")
	}

	// The registration ID, computed with openssl and coreutils from the
	// bytes tpm2-tools read.
	out, err := exec.Command("sh", "-c", "openssl dgst -sha256 -binary "+ekFile+" | base32 -w0 | tr -d = | tr A-Z a-z").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != id.RegistrationID {
		t.Errorf("registration ID from tpm2-tools output = %q, ours %q", got, id.RegistrationID)
	}

	for name, c := range map[string]struct{ data, sig []byte }{"short": {short, sigShort}, "long": {long, sigLong}} {
		in, outFile := filepath.Join(dir, name+".in"), filepath.Join(dir, name+".hmac")
		if err := os.WriteFile(in, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		tpm2tools(t, sw, "tpm2_hmac", "-c", "0x81000100", "-g", "sha256", "-o", outFile, in)
		got, _ := os.ReadFile(outFile)
		if !bytes.Equal(got, c.sig) {
			t.Errorf("%s: tpm2_hmac = %x, our Sign = %x", name, got, c.sig)
		}
	}
}

// A TPM as it leaves the factory: swtpm_setup persisted the EK and wrote its
// certificate. We use that EK as it is, read and check the certificate, and
// activate against it. The certificate is the one tpm2-tools reads, and
// chains to the local CA the harness reports.
func TestManufacturedTPM(t *testing.T) {
	sw := tpmtest.StartSwtpmWithEKCert(t)
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	before, err := tp.readPersistent(EKHandle)
	if err != nil {
		t.Fatalf("swtpm_setup persisted no EK: %v", err)
	}
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(id.EndorsementKey, tpm2.Marshal(before.pub)) {
		t.Error("Identity replaced the manufacturer's EK")
	}
	if id.EKCertificate == nil {
		t.Fatalf("no EK certificate found in NV 0x01c00002 (%v)", id.CertificateErrors)
	}
	// swtpm_setup writes no ECC P-256 certificate and no chain.
	if id.ECCEKCertificate != nil || len(id.EKCertificateChain) != 0 || len(id.CertificateErrors) != 0 {
		t.Errorf("Identity = ECC %v, chain %v, errors %v; want none", id.ECCEKCertificate, id.EKCertificateChain, id.CertificateErrors)
	}
	if err := verifyEK(id.EKCertificate, pool(t, sw.RootCA), pool(t, sw.IssuerCA)); err != nil {
		t.Errorf("the EK certificate does not chain to the harness's local CA: %v", err)
	}
	key := randBytes(t, 32)
	if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, key)); err != nil {
		t.Fatal(err)
	}
	if got, _ := tp.Sign(t.Context(), []byte("m")); !bytes.Equal(got, hmacSHA256(key, []byte("m"))) {
		t.Error("Sign with the manufacturer's EK gives the wrong HMAC")
	}
	tpmtest.CheckNoLeaks(t, tp.t)
	tp.Close() // swtpm serves one client at a time

	nv, err := parseCertificate(sw.Tool(t, "tpm2_nvread", "0x01c00002"))
	if err != nil || !bytes.Equal(nv.Raw, id.EKCertificate.Raw) {
		t.Errorf("tpm2_nvread 0x01c00002 = %v, not the certificate Identity read", err)
	}
	// What the harness documents swtpm_setup --ecc to write besides.
	p384, err := parseCertificate(sw.Tool(t, "tpm2_nvread", "0x01c00016"))
	if err != nil {
		t.Fatalf("no ECC EK certificate at 0x01c00016: %v", err)
	}
	if k, ok := p384.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() {
		t.Errorf("the certificate at 0x01c00016 is for a %T, want ECC P-384", p384.PublicKey)
	}
	if _, err := parseCertificate(sw.Tool(t, "tpm2_nvread", "0x01c08000")); err != nil {
		t.Errorf("no platform certificate at 0x01c08000: %v", err)
	}
}

// The ECC P-256 EK certificate and a chain that overflows from one index
// into the next, written with tpm2-tools as a manufacturer would.
func TestECCCertificateAndChain(t *testing.T) {
	sw := tpmtest.StartSwtpmWithEKCert(t)
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The ECC EK of the TCG template, to certify; flushed at once.
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCEKTemplate),
	}.Execute(tp.t)
	if err != nil {
		t.Fatal(err)
	}
	tp.flush(cp.ObjectHandle)
	out, _ := cp.OutPublic.Contents()
	eccEK, err := tpm2.Pub(*out)
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()

	sw.WriteNV(t, 0x01c0000a, sw.IssueEKCert(t, eccEK))
	issuer := derOf(t, sw.IssuerCA)
	other := testCertFor(t, "another intermediate", elliptic.P384())
	chain := append(bytes.Clone(issuer), other...)
	split := len(issuer) - 100 // the issuer overflows into the next index
	sw.WriteNV(t, 0x01c00100, chain[:split])
	sw.WriteNV(t, 0x01c00101, chain[split:])

	tp = open(t, sw.URI, Config{})
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(id.CertificateErrors) != 0 {
		t.Errorf("CertificateErrors = %v", id.CertificateErrors)
	}
	if id.ECCEKCertificate == nil || !eccEK.(*ecdsa.PublicKey).Equal(id.ECCEKCertificate.PublicKey) {
		t.Errorf("ECCEKCertificate = %v, want one for the TPM's ECC EK", id.ECCEKCertificate)
	}
	if len(id.EKCertificateChain) != 2 || !bytes.Equal(id.EKCertificateChain[0].Raw, issuer) || !bytes.Equal(id.EKCertificateChain[1].Raw, other) {
		t.Fatalf("EKCertificateChain = %d certificates, want the issuer CA and another, in index order", len(id.EKCertificateChain))
	}
	// The chain the TPM stores completes the path to the root, as Intel's
	// does for its on-die CA.
	inter := x509.NewCertPool()
	for _, c := range id.EKCertificateChain {
		inter.AddCert(c)
	}
	for _, c := range []*x509.Certificate{id.EKCertificate, id.ECCEKCertificate} {
		if err := verifyEK(c, pool(t, sw.RootCA), inter); err != nil {
			t.Errorf("%s: no path to the root through the TPM's chain: %v", c.Subject, err)
		}
	}
}

// verifyEK checks that cert chains to roots. An EK certificate's subject
// alternative name is critical and holds only the TPM's directory name
// (manufacturer, model, version: TCG EK Credential Profile), which
// crypto/x509 leaves unhandled; checking it is the verifier's work.
func verifyEK(cert *x509.Certificate, roots, intermediates *x509.CertPool) error {
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) })
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// Certificates that cannot be used are left out with an error that names
// their index; Identity still succeeds. An index only the owner may read
// is read with the owner password.
func TestBadCertificatesOnSimulator(t *testing.T) {
	ca, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	inter := testCertFor(t, "intermediate", elliptic.P256())
	for _, tc := range []struct {
		name      string
		rsa       func(ek crypto.PublicKey) []byte // nil: no index
		ecc       []byte
		chain     [][]byte // one per index from 0x01c00100
		chainRead string   // who may read the chain indices: "" for all, "owner", "platform"
		wantRSA   bool
		wantECC   bool
		wantChain int
		wantBad   []tpm2.TPMHandle
	}{
		{name: "matching, padded", rsa: func(ek crypto.PublicKey) []byte { return append(certFor(t, ek, ca), 0xff, 0xff) }, wantRSA: true},
		{name: "another key", rsa: func(crypto.PublicKey) []byte { return certFor(t, &other.PublicKey, ca) }, wantBad: []tpm2.TPMHandle{ekCertIndex}},
		{name: "garbage everywhere", rsa: func(crypto.PublicKey) []byte { return []byte("garbage") }, ecc: []byte{0x30, 0x03, 0x02, 0x01, 0x01},
			chain: [][]byte{inter, []byte("\x30\x82garbage")}, wantChain: 1, wantBad: []tpm2.TPMHandle{ekCertIndex, eccEKCertIndex, ekChainFirst + 1}},
		{name: "ECC certificate for an RSA key", ecc: certFor(t, &other.PublicKey, ca), wantBad: []tpm2.TPMHandle{eccEKCertIndex}},
		{name: "ECC certificate for a P-384 key", ecc: testCertFor(t, "p384", elliptic.P384()), wantBad: []tpm2.TPMHandle{eccEKCertIndex}},
		{name: "ECC P-256", ecc: inter, wantECC: true},
		{name: "owner-read chain", chain: [][]byte{inter, inter}, chainRead: "owner", wantChain: 2},
		{name: "platform-read chain", chain: [][]byte{inter}, chainRead: "platform", wantBad: []tpm2.TPMHandle{ekChainFirst}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := open(t, tpmtest.StartSim(t), Config{})
			ek, err := tp.ensureEK()
			if err != nil {
				t.Fatal(err)
			}
			tpub, _ := ek.pub.Contents()
			ekPub, err := tpm2.Pub(*tpub)
			if err != nil {
				t.Fatal(err)
			}
			if tc.rsa != nil {
				writeNV(t, tp, ekCertIndex, tc.rsa(ekPub), "")
			}
			if tc.ecc != nil {
				writeNV(t, tp, eccEKCertIndex, tc.ecc, "")
			}
			for i, c := range tc.chain {
				writeNV(t, tp, ekChainFirst+tpm2.TPMHandle(i), c, tc.chainRead)
			}
			if tc.chainRead == "owner" {
				if _, err := tp.ensureSRK(); err != nil {
					t.Fatal(err)
				}
				owner := []byte("o-secret")
				if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.TPMRHOwner, NewAuth: tpm2.TPM2BAuth{Buffer: owner}}).Execute(tp.t); err != nil {
					t.Fatal(err)
				}
				tp.cfg.OwnerAuth = []byte("wrong")
				if _, err := tp.Identity(t.Context()); !errors.Is(err, ErrAuthorization) {
					t.Errorf("Identity with a wrong owner password = %v, want ErrAuthorization", err)
				}
				tp.cfg.OwnerAuth = owner
			}
			id, err := tp.Identity(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if (id.EKCertificate != nil) != tc.wantRSA || (id.ECCEKCertificate != nil) != tc.wantECC || len(id.EKCertificateChain) != tc.wantChain {
				t.Errorf("Identity = RSA %v, ECC %v, chain of %d; want %v, %v, %d", id.EKCertificate != nil, id.ECCEKCertificate != nil, len(id.EKCertificateChain),
					tc.wantRSA, tc.wantECC, tc.wantChain)
			}
			var bad []tpm2.TPMHandle
			for _, err := range id.CertificateErrors {
				var ce *CertificateError
				if !errors.As(err, &ce) {
					t.Fatalf("CertificateErrors holds %T %v", err, err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%#08x", uint32(ce.Index))) {
					t.Errorf("%q does not name the index", err)
				}
				bad = append(bad, ce.Index)
			}
			if fmt.Sprint(bad) != fmt.Sprint(tc.wantBad) {
				t.Errorf("certificates left out from %#x, want %#x (%v)", bad, tc.wantBad, id.CertificateErrors)
			}
		})
	}
}

// certFor issues a certificate for pub, signed by ca.
func certFor(t *testing.T, pub crypto.PublicKey, ca *rsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, ca)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func derOf(t *testing.T, pemData []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(pemData)
	if b == nil {
		t.Fatalf("no PEM block in %q", pemData)
	}
	return b.Bytes
}

func pool(t *testing.T, pemData []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		t.Fatalf("no certificate in %q", pemData)
	}
	return p
}

// writeNV defines index as the platform would, and writes data to it.
// readBy "owner" leaves out authread, so only the owner may read it;
// "platform" leaves out ownerread too.
func writeNV(t *testing.T, tp *TPM, index tpm2.TPMHandle, data []byte, readBy string) {
	t.Helper()
	pub := tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: readBy == "", OwnerRead: readBy != "platform", PPRead: true,
			NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(data)),
	})
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: pub}).Execute(tp.t); err != nil {
		t.Fatal(err)
	}
	nvp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tp.t)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 512 {
		chunk := data[off:min(off+512, len(data))]
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: nvp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: nvp.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: chunk},
			Offset:     uint16(off),
		}).Execute(tp.t); err != nil {
			t.Fatal(err)
		}
	}
}
