package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func testCertDER(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "test EK"},
		NotBefore: time.Unix(1_700_000_000, 0), NotAfter: time.Unix(1_900_000_000, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseEKCertificate(t *testing.T) {
	der := testCertDER(t)
	for _, tc := range []struct {
		name      string
		nv        []byte
		wantError bool
	}{
		{"exact", der, false},
		{"padded with 0xff", append(bytes.Clone(der), 0xff, 0xff, 0xff), false},
		{"padded with zeros", append(bytes.Clone(der), make([]byte, 64)...), false},
		{"empty", nil, true},
		{"erased", bytes.Repeat([]byte{0xff}, 1024), true},
		{"cut short", der[:len(der)-1], true},
		{"not a certificate", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, true},
	} {
		cert, err := parseEKCertificate(tc.nv)
		if (err != nil) != tc.wantError || !tc.wantError && !bytes.Equal(cert.Raw, der) {
			t.Errorf("%s: parseEKCertificate = %v, %v; want error %v", tc.name, cert, err, tc.wantError)
		}
	}
}

func FuzzParseEKCertificate(f *testing.F) {
	der := testCertDER(f)
	f.Add(der)
	f.Add(append(bytes.Clone(der), 0xff, 0xff))
	f.Add(bytes.Repeat([]byte{0xff}, 16))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, nv []byte) {
		cert, err := parseEKCertificate(nv)
		if err != nil {
			if cert != nil {
				t.Fatalf("parseEKCertificate returned a certificate with error %v", err)
			}
			return
		}
		// The certificate is the index's first element, byte for byte,
		// and reads the same on its own.
		if !bytes.HasPrefix(nv, cert.Raw) {
			t.Fatalf("certificate %x is not the start of the index %x", cert.Raw, nv)
		}
		again, err := parseEKCertificate(cert.Raw)
		if err != nil || !bytes.Equal(again.Raw, cert.Raw) || !cert.Equal(again) {
			t.Fatalf("the certificate alone = %v, %v", again, err)
		}
	})
}
