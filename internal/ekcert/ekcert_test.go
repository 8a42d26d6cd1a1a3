package ekcert_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/ekcert"
	"github.com/edgetpm/edgetpm/internal/ekcert/ekcerttest"
)

// Keys are slow to make (RSA): each test binary makes these once.
var keys = sync.OnceValue(func() (k struct {
	rsa1, rsa2 *rsa.PrivateKey
	ecc1, ecc2 *ecdsa.PrivateKey
}) {
	var err error
	for _, p := range []**rsa.PrivateKey{&k.rsa1, &k.rsa2} {
		if *p, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	}
	for _, p := range []**ecdsa.PrivateKey{&k.ecc1, &k.ecc2} {
		if *p, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	}
	return k
})

func verifier(t testing.TB, now time.Time, anchors ...*x509.Certificate) *ekcert.Verifier {
	t.Helper()
	v, err := ekcert.New(ekcert.Config{Anchors: anchors, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func leaf(t testing.TB, ca *ekcerttest.CA, l ekcerttest.Leaf) []byte {
	t.Helper()
	der, err := ca.Leaf(l)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// kinds are the error kinds Verify returns.
var kinds = []error{ekcert.ErrMalformed, ekcert.ErrBadEK, ekcert.ErrWrongKey, ekcert.ErrUntrusted}

func TestVerify(t *testing.T) {
	k := keys()
	now := time.Now()
	ca := ekcerttest.NewCA(t)
	other := ekcerttest.NewCA(t)
	rsaEK := ekcerttest.TPMPublic(t, k.rsa1.Public())
	eccEK := ekcerttest.TPMPublic(t, &k.ecc1.PublicKey)
	rsaCert := ca.Issue(k.rsa1.Public())
	eccCert := ca.Issue(&k.ecc1.PublicKey)
	chain := [][]byte{ca.Intermediate.Raw}
	day := 24 * time.Hour

	// An intermediate that expired a year ago, and EK certificates it
	// issued while valid and after.
	old := ekcerttest.NewCA(t, ekcerttest.RootValidity(now.AddDate(-10, 0, 0), now.AddDate(10, 0, 0)),
		ekcerttest.IntermediateValidity(now.AddDate(-5, 0, 0), now.AddDate(-1, 0, 0)))
	oldCert := leaf(t, old, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, NotBefore: now.AddDate(-3, 0, 0)})
	lateCert := leaf(t, old, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, NotBefore: now.AddDate(0, -6, 0)})

	// A self-signed certificate of the EK, with the TCG attributes.
	selfSigned, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), NotBefore: now.Add(-day), NotAfter: now.AddDate(1, 0, 0),
		Subject:         pkix.Name{CommonName: "self"},
		KeyUsage:        x509.KeyUsageKeyAgreement,
		ExtraExtensions: []pkix.Extension{ekcerttest.SAN(t, ekcerttest.Attributes{Manufacturer: "id:49465800", Model: "m", Version: "v"})},
	}, &x509.Certificate{Subject: pkix.Name{CommonName: "self"}}, &k.ecc1.PublicKey, k.ecc1)
	if err != nil {
		t.Fatal(err)
	}

	// Subject alternative names that are not the TCG's: a DNS name
	// (crypto/x509 reads it) and, critical, a registered ID (it does not).
	dnsValue, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("tpm.example")}})
	if err != nil {
		t.Fatal(err)
	}
	dnsSAN := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: dnsValue}
	ridValue, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}}})
	if err != nil {
		t.Fatal(err)
	}
	ridSAN := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: ridValue}

	padded := append(slices.Clone(rsaCert), make([]byte, 300)...)
	ffPadded := append(slices.Clone(eccCert), strings.Repeat("\xff", 200)...)
	header := binary.BigEndian.AppendUint16([]byte{0x10, 0x01, 0x00}, uint16(len(eccCert)))
	nvHeader := append(header, eccCert...)
	concatenated := [][]byte{append(append(slices.Clone(ca.Intermediate.Raw), ca.Root.Raw...), 0xff, 0xff)}

	tests := []struct {
		name     string
		ek, cert []byte
		chain    [][]byte
		anchors  []*x509.Certificate
		now      time.Time
		want     error  // nil: verified
		warning  string // a warning that must be among the result's
		chainLen int
		// noAttributes: the certificate names no TPM
		noAttributes bool
	}{
		{name: "genuine RSA", ek: rsaEK, cert: rsaCert, chain: chain, chainLen: 3},
		{name: "genuine ECC", ek: eccEK, cert: eccCert, chain: chain, chainLen: 3},
		{name: "intermediate as anchor", ek: eccEK, cert: eccCert, anchors: []*x509.Certificate{ca.Intermediate}, chainLen: 2},
		{name: "chain in one index, padded", ek: eccEK, cert: eccCert, chain: concatenated, chainLen: 3},
		{name: "NV zero padding", ek: rsaEK, cert: padded, chain: chain, chainLen: 3},
		{name: "NV 0xff padding", ek: eccEK, cert: ffPadded, chain: chain, chainLen: 3},
		{name: "NV header", ek: eccEK, cert: nvHeader, chain: chain, chainLen: 3},
		{name: "expired intermediate", ek: eccEK, cert: oldCert, chain: [][]byte{old.Intermediate.Raw}, anchors: []*x509.Certificate{old.Root},
			warning: "Intermediate CA,O=ekcerttest\" expired on " + now.AddDate(-1, 0, 0).UTC().Format(time.DateOnly), chainLen: 3},
		{name: "issued by an expired intermediate", ek: eccEK, cert: lateCert, chain: [][]byte{old.Intermediate.Raw}, anchors: []*x509.Certificate{old.Root}, want: ekcert.ErrUntrusted},
		{name: "expired EK certificate", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.Add(-day)}),
			chain: chain, warning: "serial", chainLen: 3},
		{name: "not yet valid", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, NotBefore: now.Add(time.Hour)}), chain: chain, want: ekcert.ErrNotYetValid},
		{name: "not yet valid is untrusted", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, NotBefore: now.Add(time.Hour)}), chain: chain, want: ekcert.ErrUntrusted},
		{name: "checked at the clock given", ek: eccEK, cert: eccCert, chain: chain, now: now.AddDate(0, 0, -2), want: ekcert.ErrNotYetValid},
		{name: "wrong key", ek: rsaEK, cert: ca.Issue(k.rsa2.Public()), chain: chain, want: ekcert.ErrWrongKey},
		{name: "wrong ECC key", ek: eccEK, cert: ca.Issue(&k.ecc2.PublicKey), chain: chain, want: ekcert.ErrWrongKey},
		{name: "wrong key type", ek: rsaEK, cert: eccCert, chain: chain, want: ekcert.ErrWrongKey},
		{name: "unknown issuer", ek: eccEK, cert: other.Issue(&k.ecc1.PublicKey), chain: [][]byte{other.Intermediate.Raw}, want: ekcert.ErrUntrusted},
		{name: "no anchor", ek: eccEK, cert: eccCert, chain: chain, anchors: []*x509.Certificate{}, want: ekcert.ErrUntrusted},
		{name: "intermediate missing", ek: eccEK, cert: eccCert, want: ekcert.ErrUntrusted},
		{name: "chain is no anchor", ek: eccEK, cert: eccCert, chain: [][]byte{ca.Intermediate.Raw, ca.Root.Raw}, anchors: []*x509.Certificate{}, want: ekcert.ErrUntrusted},
		{name: "self-signed", ek: eccEK, cert: selfSigned, want: ekcert.ErrUntrusted},
		{name: "self-signed in the chain", ek: eccEK, cert: selfSigned, chain: [][]byte{selfSigned}, want: ekcert.ErrUntrusted},
		{name: "unknown critical extension", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey,
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}}), chain: chain, want: ekcert.ErrUntrusted},
		{name: "SAN with a DNS name", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, SAN: &dnsSAN}), chain: chain, chainLen: 3,
			warning: "no TPM attributes", noAttributes: true},
		{name: "critical SAN Go cannot read", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, SAN: &ridSAN}), chain: chain, want: ekcert.ErrUntrusted},
		{name: "server certificate", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), chain: chain, want: ekcert.ErrUntrusted},
		{name: "any usage", ek: eccEK, cert: leaf(t, ca, ekcerttest.Leaf{EK: &k.ecc1.PublicKey, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}), chain: chain, chainLen: 3},
		{name: "truncated", ek: eccEK, cert: eccCert[:len(eccCert)/2], chain: chain, want: ekcert.ErrMalformed},
		{name: "one byte short", ek: eccEK, cert: eccCert[:len(eccCert)-1], chain: chain, want: ekcert.ErrMalformed},
		{name: "garbage", ek: eccEK, cert: []byte("not a certificate at all"), chain: chain, want: ekcert.ErrMalformed},
		{name: "empty", ek: eccEK, cert: nil, chain: chain, want: ekcert.ErrMalformed},
		{name: "garbage chain", ek: eccEK, cert: eccCert, chain: [][]byte{{0x30, 0x03, 1, 2, 3}}, want: ekcert.ErrMalformed},
		{name: "empty chain index", ek: eccEK, cert: eccCert, chain: [][]byte{{}}, want: ekcert.ErrMalformed},
		{name: "EK garbage", ek: []byte{0, 3, 1, 2, 3}, cert: eccCert, chain: chain, want: ekcert.ErrBadEK},
		{name: "EK size prefix wrong", ek: eccEK[:len(eccEK)-1], cert: eccCert, chain: chain, want: ekcert.ErrBadEK},
		{name: "EK without size", ek: eccEK[2:], cert: eccCert, chain: chain, want: ekcert.ErrBadEK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			anchors := tc.anchors
			if anchors == nil {
				anchors = []*x509.Certificate{ca.Root}
			}
			at := tc.now
			if at.IsZero() {
				at = now
			}
			res, err := verifier(t, at, anchors...).Verify(tc.ek, tc.cert, tc.chain)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Verify = %v, want %v", err, tc.want)
				}
				if res != nil {
					t.Errorf("Verify returned a result with error %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(res.Chain) != tc.chainLen {
				t.Errorf("chain of %d certificates, want %d", len(res.Chain), tc.chainLen)
			}
			if got, want := res.Chain[len(res.Chain)-1], anchors[0]; !got.Equal(want) {
				t.Errorf("chain ends at %s, want %s", got.Subject, want.Subject)
			}
			for _, c := range res.Chain {
				if c.NotAfter.Year() == 9999 {
					t.Errorf("the chain holds a copy with its expiry lifted: %s", c.Subject)
				}
			}
			if tc.noAttributes {
				if res.ManufacturerID != "" || res.Model != "" {
					t.Errorf("attributes %q %q read from a SAN without them", res.ManufacturerID, res.Model)
				}
			} else if res.Manufacturer != "Infineon" || res.ManufacturerID != "id:49465800" || res.Model != "SLB9672" || res.Version != "id:00100100" {
				t.Errorf("attributes %q %q %q %q, want Infineon id:49465800 SLB9672 id:00100100", res.Manufacturer, res.ManufacturerID, res.Model, res.Version)
			}
			if tc.warning == "" && len(res.Warnings) > 0 {
				t.Errorf("warnings %q, want none", res.Warnings)
			}
			if tc.warning != "" && !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, tc.warning) }) {
				t.Errorf("warnings %q, want one with %q", res.Warnings, tc.warning)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	k := keys()
	for _, tc := range []struct {
		attrs                   ekcerttest.Attributes
		manufacturer, id, model string
		warn                    bool
	}{
		{ekcerttest.Attributes{Manufacturer: "id:53544D20", Model: "ST33KTPM", Version: "id:00010200"}, "STMicroelectronics", "id:53544D20", "ST33KTPM", false},
		{ekcerttest.Attributes{Manufacturer: "id:4e544300", Model: "NPCT75x", Version: "id:00070002"}, "Nuvoton", "id:4e544300", "NPCT75x", false},
		{ekcerttest.Attributes{Manufacturer: "id:00001014", Model: "swtpm", Version: "id:20191023"}, "", "id:00001014", "swtpm", false},
		{ekcerttest.Attributes{Manufacturer: "Infineon", Model: "x", Version: "y"}, "", "Infineon", "x", false},
		{ekcerttest.Attributes{Model: "only a model"}, "", "", "only a model", true},
	} {
		t.Run(tc.id, func(t *testing.T) {
			ca := ekcerttest.NewCA(t, ekcerttest.WithAttributes(tc.attrs))
			res, err := verifier(t, time.Now(), ca.Root).Verify(ekcerttest.TPMPublic(t, &k.ecc1.PublicKey), ca.Issue(&k.ecc1.PublicKey), [][]byte{ca.Intermediate.Raw})
			if err != nil {
				t.Fatal(err)
			}
			if res.Manufacturer != tc.manufacturer || res.ManufacturerID != tc.id || res.Model != tc.model || res.Version != tc.attrs.Version {
				t.Errorf("got %q %q %q %q, want %q %q %q %q", res.Manufacturer, res.ManufacturerID, res.Model, res.Version, tc.manufacturer, tc.id, tc.model, tc.attrs.Version)
			}
			if got := len(res.Warnings) > 0; got != tc.warn {
				t.Errorf("warnings %q, want some: %v", res.Warnings, tc.warn)
			}
		})
	}
}

// swtpm_setup --tpm2 --create-ek-cert --ecc with swtpm_localca (swtpm
// 0.7.1) made testdata/swtpm: the EK certificates as NV holds them
// (tpm2_nvread 0x1c00002, 0x1c00016), the EKs' TPM2B_PUBLIC
// (tpm2_readpublic -c 0x81010001, 0x81010016 -o) and the local CA's root
// and issuer. Nothing in the policy may refuse them.
func TestSwtpm(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/swtpm/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	root, err := ekcert.ParsePEM(read("localca-root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ekcert.ParsePEM(read("localca-issuer.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		anchors []*x509.Certificate
		chain   [][]byte
		length  int
	}{
		{"root anchor, issuer in chain", root, [][]byte{issuer[0].Raw}, 3},
		{"both anchors", append(root, issuer...), nil, 2},
	} {
		for _, alg := range []string{"rsa", "ecc"} {
			t.Run(tc.name+" "+alg, func(t *testing.T) {
				v := verifier(t, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), tc.anchors...)
				res, err := v.Verify(read("ek-"+alg+".pub"), read("ek-"+alg+".nv"), tc.chain)
				if err != nil {
					t.Fatal(err)
				}
				if res.ManufacturerID != "id:00001014" || res.Model != "swtpm" || res.Version != "id:20191023" || len(res.Warnings) > 0 || len(res.Chain) != tc.length {
					t.Errorf("result %+v", res)
				}
			})
		}
	}
	// The RSA EK's certificate does not certify the ECC EK.
	_, err = verifier(t, time.Now(), root...).Verify(read("ek-ecc.pub"), read("ek-rsa.nv"), [][]byte{issuer[0].Raw})
	if !errors.Is(err, ekcert.ErrWrongKey) {
		t.Errorf("Verify(ECC EK, RSA certificate) = %v, want ErrWrongKey", err)
	}
}

func TestNewRefusesLeafAnchor(t *testing.T) {
	ca := ekcerttest.NewCA(t)
	c, err := x509.ParseCertificate(ca.Issue(&keys().ecc1.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekcert.New(ekcert.Config{Anchors: []*x509.Certificate{c}}); err == nil {
		t.Error("New accepted an EK certificate as an anchor")
	}
}

func TestParsePEM(t *testing.T) {
	ca := ekcerttest.NewCA(t)
	certs, err := ekcert.ParsePEM(append([]byte("# lab CA\n"), append(ca.RootPEM(), ca.RootPEM()...)...))
	if err != nil || len(certs) != 2 || !certs[0].Equal(ca.Root) {
		t.Errorf("ParsePEM(two roots) = %d certificates, %v", len(certs), err)
	}
	for _, bad := range []string{
		"",
		"no PEM here",
		"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if certs, err := ekcert.ParsePEM([]byte(bad)); err == nil {
			t.Errorf("ParsePEM(%q) = %d certificates, want an error", bad, len(certs))
		}
	}
}

func TestVendorName(t *testing.T) {
	for id, want := range map[uint32]string{0x49465800: "Infineon", 0x53544D20: "STMicroelectronics", 0x4E544300: "Nuvoton", 0x494E5443: "Intel", 0x414D4400: "AMD", 0x00001014: ""} {
		if got := ekcert.VendorName(id); got != want {
			t.Errorf("VendorName(%#x) = %q, want %q", id, got, want)
		}
	}
}

// FuzzVerify: whatever the TPM hands over, Verify returns a result or an
// error of one of its kinds, and never panics.
func FuzzVerify(f *testing.F) {
	k := keys()
	ca := ekcerttest.NewCA(f)
	eccEK := ekcerttest.TPMPublic(f, &k.ecc1.PublicKey)
	rsaEK := ekcerttest.TPMPublic(f, k.rsa1.Public())
	eccCert := ca.Issue(&k.ecc1.PublicKey)
	rsaCert := ca.Issue(k.rsa1.Public())
	f.Add(eccEK, eccCert, ca.Intermediate.Raw)
	f.Add(rsaEK, rsaCert, ca.Intermediate.Raw)
	f.Add(rsaEK, eccCert, []byte{})
	f.Add(eccEK, eccCert[:100], ca.Intermediate.Raw)
	f.Add(eccEK, append(slices.Clone(eccCert), 0, 0, 0xff), append(slices.Clone(ca.Intermediate.Raw), 0xff))
	f.Add(eccEK[:10], []byte("garbage"), []byte{0x30})
	f.Add([]byte{}, []byte{0x10, 0x01, 0x00, 0xff, 0xff}, []byte{0x30, 0x80})
	v := verifier(f, time.Now(), ca.Root)
	f.Fuzz(func(t *testing.T, ek, cert, chain []byte) {
		res, err := v.Verify(ek, cert, [][]byte{chain})
		if err == nil {
			if res == nil || len(res.Chain) < 2 {
				t.Fatalf("Verify = %+v, nil error", res)
			}
			return
		}
		if !slices.ContainsFunc(kinds, func(k error) bool { return errors.Is(err, k) }) {
			t.Fatalf("Verify error %v is of no kind", err)
		}
	})
}

// BenchmarkVerify is the cost of checking one EK certificate, chain from
// the TPM included.
func BenchmarkVerify(b *testing.B) {
	k := keys()
	ca := ekcerttest.NewCA(b)
	ek := ekcerttest.TPMPublic(b, k.rsa1.Public())
	cert := ca.Issue(k.rsa1.Public())
	v := verifier(b, time.Now(), ca.Root)
	for b.Loop() {
		if _, err := v.Verify(ek, cert, [][]byte{ca.Intermediate.Raw}); err != nil {
			b.Fatal(err)
		}
	}
}

// A Verifier serves many goroutines (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	k := keys()
	ca := ekcerttest.NewCA(t)
	v := verifier(t, time.Now(), ca.Root)
	ek := ekcerttest.TPMPublic(t, &k.ecc1.PublicKey)
	cert := ca.Issue(&k.ecc1.PublicKey)
	wrong := ca.Issue(&k.ecc2.PublicKey)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := v.Verify(ek, cert, [][]byte{ca.Intermediate.Raw}); err != nil {
					t.Error(err)
				}
				if _, err := v.Verify(ek, wrong, [][]byte{ca.Intermediate.Raw}); !errors.Is(err, ekcert.ErrWrongKey) {
					t.Errorf("goroutine %d: Verify(wrong) = %v", i, err)
				}
			}
		})
	}
	wg.Wait()
}
