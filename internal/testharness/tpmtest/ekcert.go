package tpmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
)

// Manufactured is swtpm on a state that swtpm_setup made as a TPM leaves
// the factory, with its EK certificates issued by swtpm-localca, a local CA
// of its own in the test's temporary folder.
//
// swtpm_setup (0.7) with --create-ek-cert --create-platform-cert --ecc
// writes:
//   - an RSA 2048 EK, persisted at 0x81010001, and its certificate in NV
//     0x01c00002 (the EK Credential Profile's RSA 2048 index);
//   - an ECC NIST P-384 EK, persisted at 0x81010016, and its certificate in
//     NV 0x01c00016 (the profile's high range). It writes nothing to
//     0x01c0000a, the ECC P-256 index: IssueEKCert makes one;
//   - a platform certificate in NV 0x01c08000;
//   - nothing in the chain indices 0x01c00100-0x01c001ff.
//
// Its EK certificates are issued by IssuerCA ("CN=swtpm-localca"), itself
// issued by the self-signed RootCA ("CN=swtpm-localca-rootca"); both CAs
// are created on the first run in the test's folder. The NV indices are
// defined by the platform, readable with their own empty password
// (authread) and by the owner.
type Manufactured struct {
	*Swtpm
	// RootCA is the root CA certificate, PEM: the trust anchor for the EK
	// certificates (edge-deploy enroll --ek-ca).
	RootCA []byte
	// IssuerCA is the CA certificate that signs the EK certificates, PEM,
	// issued by RootCA.
	IssuerCA []byte

	setupDir string // swtpm_setup.conf, swtpm-localca.conf, .options, ca/
}

// StartSwtpmWithEKCert manufactures a fresh swtpm state with swtpm_setup
// and swtpm-localca, configured in the test's temporary folder (nothing in
// /etc or /var is read or written), and starts swtpm on it until the test
// ends.
func StartSwtpmWithEKCert(t testing.TB) *Manufactured {
	t.Helper()
	setup := peertest.Need(t, "swtpm_setup")
	localca := peertest.Need(t, "swtpm_localca")
	m := &Manufactured{Swtpm: &Swtpm{Dir: t.TempDir(), flags: "not-need-init,startup-clear"}, setupDir: t.TempDir()}
	ca := filepath.Join(m.setupDir, "ca")
	files := map[string]string{
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localca, m.path("swtpm-localca.conf"), m.path("swtpm-localca.options")),
		"swtpm-localca.conf": fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca),
		// What swtpm_localca puts in the platform certificate.
		"swtpm-localca.options": "--platform-manufacturer edgetpm\n--platform-version 2.1\n--platform-model swtpm\n",
	}
	if err := os.Mkdir(ca, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(m.path(name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(setup, "--tpm2", "--tpmstate", m.Dir, "--config", m.path("swtpm_setup.conf"),
		"--create-ek-cert", "--create-platform-cert", "--ecc", "--pcr-banks", "sha256", "--overwrite")
	// swtpm_localca falls back to $XDG_CONFIG_HOME or $HOME/.config for
	// what the configuration leaves out: point both into the folder too.
	cmd.Env = append(os.Environ(), "HOME="+m.setupDir, "XDG_CONFIG_HOME="+m.setupDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	var err error
	if m.RootCA, err = os.ReadFile(filepath.Join(ca, "swtpm-localca-rootca-cert.pem")); err != nil {
		t.Fatalf("swtpm_localca made no root CA: %v", err)
	}
	if m.IssuerCA, err = os.ReadFile(filepath.Join(ca, "issuercert.pem")); err != nil {
		t.Fatalf("swtpm_localca made no issuer CA: %v", err)
	}
	m.start(t)
	return m
}

func (m *Manufactured) path(name string) string { return filepath.Join(m.setupDir, name) }

// IssueEKCert has swtpm_localca issue an EK certificate for pub (RSA, or
// ECDSA on P-256 or P-384) with IssuerCA, as swtpm_setup has it do for the
// EKs it creates, and returns it in DER.
func (m *Manufactured) IssueEKCert(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	var ek string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		ek = hex.EncodeToString(k.N.Bytes())
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		ek = fmt.Sprintf("x=%x,y=%x", k.X.FillBytes(make([]byte, size)), k.Y.FillBytes(make([]byte, size)))
		if k.Curve == elliptic.P384() {
			ek += ",id=secp384r1"
		}
	default:
		t.Fatalf("IssueEKCert: unsupported key %T", pub)
	}
	out := t.TempDir()
	// The TPM's attributes as swtpm_setup passes them for swtpm 0.7.
	cmd := exec.Command(peertest.Need(t, "swtpm_localca"), "--type", "ek", "--ek", ek, "--dir", out, "--tpm2",
		"--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164",
		"--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023",
		"--configfile", m.path("swtpm-localca.conf"), "--optsfile", m.path("swtpm-localca.options"))
	cmd.Env = append(os.Environ(), "HOME="+m.setupDir, "XDG_CONFIG_HOME="+m.setupDir)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_localca: %v\n%s", err, msg)
	}
	der, err := os.ReadFile(filepath.Join(out, "ek.cert"))
	if err != nil {
		t.Fatalf("swtpm_localca wrote no certificate: %v", err)
	}
	return der
}

// Tool runs a tpm2-tools command against swtpm and returns its standard
// output. swtpm serves one client at a time: close other connections
// first.
func (s *Swtpm) Tool(t testing.TB, tool string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(peertest.Need(t, tool), append([]string{"-T", s.TCTI}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// WriteNV defines an NV index as a TPM manufacturer defines its EK
// certificate indices (platform-created, readable with the index's empty
// password or the owner's, written with the platform's) and writes data
// to it, with tpm2_nvdefine and tpm2_nvwrite.
func (s *Swtpm) WriteNV(t testing.TB, index uint32, data []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "nv.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	h := fmt.Sprintf("%#x", index)
	s.Tool(t, "tpm2_nvdefine", "-C", "p", "-s", fmt.Sprint(len(data)),
		"-a", "platformcreate|ppwrite|ppread|ownerread|authread|no_da", h)
	s.Tool(t, "tpm2_nvwrite", "-C", "p", "-i", file, h)
}
