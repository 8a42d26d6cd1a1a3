package enroll

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/ekcert"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
)

// fakeEK returns an EK TPM2B_PUBLIC in the shape of the TCG template
// (tpm2.RSAEKTemplate) whose modulus is a random odd 2048-bit number: no
// private key is ever used, and generating 10,000 real RSA keys takes
// minutes.
func fakeEK(t testing.TB) []byte {
	t.Helper()
	n := make([]byte, 256)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	n[0] |= 0x80
	n[255] |= 1
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	return tpm2.Marshal(tpm2.New2B(ek))
}

func ekModulus(t testing.TB, ek []byte) *big.Int {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek[2:])
	if err != nil {
		t.Fatal(err)
	}
	n, err := pub.Unique.RSA()
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(n.Buffer)
}

// testCA is a TPM manufacturer's root and the intermediate that signs EK
// certificates, with ECDSA keys so that minting is quick.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	serial            int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca := &testCA{}
	var err error
	if ca.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if ca.interKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{name}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
	}
	rt := tmpl(name+" EK Root CA", 1)
	der, err := x509.CreateCertificate(rand.Reader, rt, rt, &ca.rootKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.root, _ = x509.ParseCertificate(der)
	der, err = x509.CreateCertificate(rand.Reader, tmpl(name+" EK Intermediate CA", 2), ca.root, &ca.interKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.inter, _ = x509.ParseCertificate(der)
	ca.serial = 100
	return ca
}

// TCG attribute OIDs of the EK certificate's subject alternative name (TCG
// EK Credential Profile 2.0, 3.2.9).
var (
	oidManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidEKCertKP     = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// mint returns a PEM EK certificate for ek's key, issued by the
// intermediate, and the intermediate in PEM.
func (ca *testCA) mint(t testing.TB, ek []byte) (cert, chain string) {
	t.Helper()
	utf8 := func(s string) asn1.RawValue { return asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(s)} }
	name, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidManufacturer, Value: utf8("id:54455354")}},
		{{Type: oidModel, Value: utf8("TEST-TPM")}},
		{{Type: oidVersion, Value: utf8("id:00010002")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		NotBefore:    ca.inter.NotBefore, NotAfter: ca.inter.NotAfter,
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertKP},
		// The subject is empty, so the name is critical (RFC 5280 4.2.1.6).
		ExtraExtensions:       []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &rsa.PublicKey{N: ekModulus(t, ek), E: 65537}, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw}))
}

// record returns an identity as 'edge-provisioner identity --json' prints
// it, with an EK certificate from ca when ca is not nil.
func record(t testing.TB, id string, ca *testCA) Record {
	t.Helper()
	ek := fakeEK(t)
	r := Record{RegistrationID: id, EndorsementKey: base64.StdEncoding.EncodeToString(ek)}
	if ca != nil {
		cert, chain := ca.mint(t, ek)
		r.Certificate, r.Chain = cert, []string{chain}
	}
	return r
}

// dps is an emulator served over TLS and a service client of it.
type dps struct {
	srv *dpsemu.Server
	svc *dpsservice.Client
}

func startDPS(t testing.TB, cfg dpsemu.Config) *dps {
	t.Helper()
	srv, err := dpsemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return &dps{srv: srv, svc: &dpsservice.Client{Conn: srv.ConnectionString(), Endpoint: ts.URL, HTTP: ts.Client()}}
}

// all returns every enrollment the emulator holds, by registration ID.
func (d *dps) all(t testing.TB) map[string]dpsservice.Enrollment {
	t.Helper()
	out := map[string]dpsservice.Enrollment{}
	cont := ""
	for {
		page, next, err := d.svc.QueryPage(t.Context(), "SELECT * FROM enrollments", 1000, cont)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			out[e.RegistrationID] = e
		}
		if next == "" {
			return out
		}
		cont = next
	}
}

// verifier trusts the roots of cas.
func verifier(t testing.TB, cas ...*testCA) Verifier {
	t.Helper()
	var anchors []*x509.Certificate
	for _, ca := range cas {
		anchors = append(anchors, ca.root)
	}
	v, err := ekcert.New(ekcert.Config{Anchors: anchors})
	if err != nil {
		// TODO(enroll): until internal/ekcert lands, a stand-in that
		// does what its API promises for these certificates.
		pool := x509.NewCertPool()
		for _, a := range anchors {
			pool.AddCert(a)
		}
		return standIn{pool}
	}
	return v
}

type standIn struct{ roots *x509.CertPool }

func (s standIn) Verify(ek, der []byte, chain [][]byte) (*ekcert.Result, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, ekcert.ErrMalformed
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek[2:])
	if err != nil {
		return nil, ekcert.ErrMalformed
	}
	n, _ := pub.Unique.RSA()
	if k, ok := cert.PublicKey.(*rsa.PublicKey); !ok || k.N.Cmp(new(big.Int).SetBytes(n.Buffer)) != 0 {
		return nil, ekcert.ErrWrongKey
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		ic, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, ekcert.ErrMalformed
		}
		inter.AddCert(ic)
	}
	cert.UnhandledCriticalExtensions = nil // the TCG name
	if _, err := cert.Verify(x509.VerifyOptions{Roots: s.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, ekcert.ErrUntrusted
	}
	return &ekcert.Result{Manufacturer: "id:54455354", Model: "TEST-TPM", Version: "id:00010002"}, nil
}
