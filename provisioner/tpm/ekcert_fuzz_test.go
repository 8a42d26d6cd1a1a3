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
	return testCertFor(t, "test EK", elliptic.P256())
}

// testCertFor makes a self-signed certificate for a new key on curve.
func testCertFor(t testing.TB, cn string, curve elliptic.Curve) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(1_700_000_000, 0), NotAfter: time.Unix(1_900_000_000, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCertificate(t *testing.T) {
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
		cert, err := parseCertificate(tc.nv)
		if (err != nil) != tc.wantError || !tc.wantError && !bytes.Equal(cert.Raw, der) {
			t.Errorf("%s: parseCertificate = %v, %v; want error %v", tc.name, cert, err, tc.wantError)
		}
	}
}

func TestParseCertificateChain(t *testing.T) {
	a, b := testCertFor(t, "A", elliptic.P256()), testCertFor(t, "B", elliptic.P384())
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name    string
		nv      []byte
		want    [][]byte // the certificates returned, error or not
		wantOff int      // where the bad certificate starts; -1 for no error
	}{
		{"none", nil, nil, -1},
		{"erased", bytes.Repeat([]byte{0xff}, 100), nil, -1},
		{"one", a, [][]byte{a}, -1},
		{"two", cat(a, b), [][]byte{a, b}, -1},
		{"padding between and after", cat(a, []byte{0, 0, 0xff}, b, make([]byte, 9)), [][]byte{a, b}, -1},
		{"second cut short", cat(a, b[:len(b)-3]), [][]byte{a}, len(a)},
		{"garbage first", cat([]byte("garbage"), a), nil, 0},
		{"garbage after one", cat(a, []byte{0xff, 0x30, 0x03, 0x02, 0x01, 0x01}), [][]byte{a}, len(a) + 1},
	} {
		certs, off, err := parseCertificateChain(tc.nv)
		if (err != nil) != (tc.wantOff >= 0) || err != nil && off != tc.wantOff {
			t.Errorf("%s: parseCertificateChain = error %v at %d, want an error at %d", tc.name, err, off, tc.wantOff)
		}
		if len(certs) != len(tc.want) {
			t.Errorf("%s: parseCertificateChain = %d certificates, want %d", tc.name, len(certs), len(tc.want))
			continue
		}
		for i := range certs {
			if !bytes.Equal(certs[i].Raw, tc.want[i]) {
				t.Errorf("%s: certificate %d is not the one written", tc.name, i)
			}
		}
	}
}

func FuzzParseCertificate(f *testing.F) {
	der := testCertDER(f)
	f.Add(der)
	f.Add(append(bytes.Clone(der), 0xff, 0xff))
	f.Add(bytes.Repeat([]byte{0xff}, 16))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, nv []byte) {
		cert, err := parseCertificate(nv)
		if err != nil {
			if cert != nil {
				t.Fatalf("parseCertificate returned a certificate with error %v", err)
			}
			return
		}
		// The certificate is the index's first element, byte for byte,
		// and reads the same on its own.
		if !bytes.HasPrefix(nv, cert.Raw) {
			t.Fatalf("certificate %x is not the start of the index %x", cert.Raw, nv)
		}
		again, err := parseCertificate(cert.Raw)
		if err != nil || !bytes.Equal(again.Raw, cert.Raw) || !cert.Equal(again) {
			t.Fatalf("the certificate alone = %v, %v", again, err)
		}
	})
}

func FuzzParseCertificateChain(f *testing.F) {
	a, b := testCertFor(f, "A", elliptic.P256()), testCertFor(f, "B", elliptic.P384())
	f.Add(bytes.Join([][]byte{a, b}, nil))
	f.Add(bytes.Join([][]byte{a, {0, 0xff}, b, {0xff}}, nil))
	f.Add(append(bytes.Clone(a), b[:20]...))
	f.Add([]byte{0xff, 0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, nv []byte) {
		certs, off, err := parseCertificateChain(nv)
		if off < 0 || off > len(nv) {
			t.Fatalf("offset %d outside the %d bytes", off, len(nv))
		}
		// The certificates appear in the data in order, each whole, and
		// all before the offset of a bad one.
		pos := 0
		for i, c := range certs {
			at := bytes.Index(nv[pos:], c.Raw)
			if at < 0 {
				t.Fatalf("certificate %d is not in the data after offset %d", i, pos)
			}
			pos += at + len(c.Raw)
		}
		if err != nil && pos > off {
			t.Fatalf("certificates end at %d, after the bad one at %d", pos, off)
		}
		if err == nil {
			for _, c := range nv[pos:] {
				if c != 0 && c != 0xff {
					t.Fatalf("no error, yet the data after the last certificate is not padding: %x", nv[pos:])
				}
			}
		}
	})
}
