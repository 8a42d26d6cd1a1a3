package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// tpm2tools runs a tpm2-tools command against swtpm.
func tpm2tools(t *testing.T, sw *tpmtest.Swtpm, tool string, args ...string) {
	t.Helper()
	peertest.Need(t, tool)
	cmd := exec.Command(tool, append([]string{"-T", sw.TCTI}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
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
// activate against it.
func TestManufacturedTPM(t *testing.T) {
	sw := tpmtest.StartManufactured(t)
	tp := open(t, sw.URI, Config{})
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
		t.Fatal("no EK certificate found in NV 0x01c00002")
	}
	if !strings.Contains(id.EKCertificate.Issuer.String(), "swtpm") {
		t.Errorf("EK certificate issuer = %q, want swtpm-localca's", id.EKCertificate.Issuer)
	}
	key := randBytes(t, 32)
	if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, key)); err != nil {
		t.Fatal(err)
	}
	if got, _ := tp.Sign(t.Context(), []byte("m")); !bytes.Equal(got, hmacSHA256(key, []byte("m"))) {
		t.Error("Sign with the manufacturer's EK gives the wrong HMAC")
	}
}

// An EK certificate written by the platform is read back; one that certifies
// another key is refused.
func TestEKCertificateOnSimulator(t *testing.T) {
	ca, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, match := range []bool{true, false} {
		t.Run(fmt.Sprintf("match=%v", match), func(t *testing.T) {
			tp, err := Open(tpmtest.StartSim(t), Config{})
			if err != nil {
				t.Fatal(err)
			}
			ek, err := tp.ensureEK()
			if err != nil {
				t.Fatal(err)
			}
			tpub, _ := ek.pub.Contents()
			ekPub, err := tpm2.Pub(*tpub)
			if err != nil {
				t.Fatal(err)
			}
			certified := ekPub
			if !match {
				certified = &other.PublicKey
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, certified, ca)
			if err != nil {
				t.Fatal(err)
			}
			writeNV(t, tp, ekCertIndex, append(der, 0xff, 0xff)) // padded, as some vendors do
			id, err := tp.Identity(t.Context())
			if match {
				if err != nil || id.EKCertificate == nil || !bytes.Equal(id.EKCertificate.Raw, der) {
					t.Errorf("Identity with a matching EK certificate = %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), "does not certify") {
				t.Errorf("Identity with a certificate for another key = %v, want a refusal", err)
			}
			tpmtest.CheckNoLeaks(t, tp.t)
			tp.Close()
		})
	}
}

// writeNV defines index as the platform would, and writes data to it.
func writeNV(t *testing.T, tp *TPM, index tpm2.TPMHandle, data []byte) {
	t.Helper()
	pub := tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: true, OwnerRead: true, PPRead: true,
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
