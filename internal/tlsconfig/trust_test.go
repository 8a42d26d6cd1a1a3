package tlsconfig_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

func TestTrustFile(t *testing.T) {
	if pool, err := tlsconfig.TrustFile(""); pool != nil || err != nil {
		t.Errorf(`TrustFile("") = %v, %v; want nil, nil (the system's roots)`, pool, err)
	}
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, junk := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "junk.pem")
	os.WriteFile(good, ca.CertPEM(), 0o644)
	os.WriteFile(junk, []byte("not PEM"), 0o644)
	pool, err := tlsconfig.TrustFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerTLS("localhost")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("a server certificate of the CA does not verify with the pool: %v", err)
	}
	for _, bad := range []string{junk, filepath.Join(dir, "missing.pem")} {
		if _, err := tlsconfig.TrustFile(bad); err == nil {
			t.Errorf("tlsconfig.TrustFile(%s) = nil error", bad)
		}
	}
}
