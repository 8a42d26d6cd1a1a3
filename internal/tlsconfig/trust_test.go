package tlsconfig_test

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

// verifies reports whether a server certificate of ca for localhost
// verifies against pool.
func verifies(t *testing.T, ca *pki.CA, pool *x509.CertPool) bool {
	t.Helper()
	tc, err := ca.ServerTLS("localhost")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"})
	return err == nil
}

func TestTrustFile(t *testing.T) {
	if pool, err := tlsconfig.TrustFile(""); pool != nil || err != nil {
		t.Errorf(`TrustFile("") = %v, %v; want nil, nil (the system's roots)`, pool, err)
	}
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("ca.pem", ca.CertPEM())
	for _, tt := range []struct {
		name, file string
		want       string // in the error; "" is success
	}{
		{"CA file", good, ""},
		{"not PEM", write("junk.pem", []byte("not PEM")), "no PEM certificate"},
		{"PEM, no certificate", write("key.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")), "no PEM certificate"},
		{"missing", filepath.Join(dir, "missing.pem"), "no such file"},
		{"a folder", dir, "directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := tlsconfig.TrustFile(tt.file)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("TrustFile(%s) = %v", tt.file, err)
				}
				if !verifies(t, ca, pool) {
					t.Errorf("a server certificate of the CA does not verify with TrustFile(%s)", tt.file)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("TrustFile(%s) = %v, want an error naming the file, with %q", tt.file, err, tt.want)
			}
		})
	}
}

// A CA file can be named by whoever writes the module twin: only a
// regular file of a bounded size is read. A FIFO would block the reader
// for ever, a device such as /dev/zero would be read until memory runs
// out, and a huge file would be read whole.
func TestTrustFileRefused(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "ca.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A good certificate, then more than the limit of text PEM skips.
	huge := filepath.Join(dir, "huge.pem")
	padding := bytes.Repeat([]byte("# padding\n"), tlsconfig.MaxCAFile/10+1)
	if err := os.WriteFile(huge, append(ca.CertPEM(), padding...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, file, want string }{
		{"FIFO", fifo, "not a regular file"},
		{"device", os.DevNull, "not a regular file"},
		{"larger than the limit", huge, "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := tlsconfig.TrustFile(tt.file)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file) {
					t.Errorf("TrustFile(%s) = %v, want an error naming the file, with %q", tt.file, err, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("TrustFile(%s) still reading after 5s", tt.file)
			}
		})
	}
}

// A trust bundle replaces the system's roots: IoT Edge's edgeHub is
// trusted through it and nothing else.
func TestTrustBundle(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.TrustBundle(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !verifies(t, ca, pool) {
		t.Error("a server certificate of the bundle's CA does not verify")
	}
	if verifies(t, other, pool) {
		t.Error("a server certificate of another CA verifies")
	}
	for _, bad := range [][]byte{nil, []byte("not PEM")} {
		if pool, err := tlsconfig.TrustBundle(bad); err == nil {
			t.Errorf("TrustBundle(%q) = %v, nil; want an error", bad, pool)
		}
	}
}
