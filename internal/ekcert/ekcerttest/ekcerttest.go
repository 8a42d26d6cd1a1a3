// Package ekcerttest mints EK certificates for tests: a manufacturer CA
// (root and intermediate, ECDSA P-256) that issues TCG-profile EK
// certificates for the EK public keys a test passes, cheaply enough for
// thousands of identities, and the TPM2B_PUBLIC of such keys.
package ekcerttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	x509ext "github.com/google/go-attestation/x509"
	"github.com/google/go-tpm/tpm2"
)

// The TCG attributes an EK certificate carries (TCG EK Credential Profile
// 2.0, "Subject Alternative Name") and its extended key usage.
var (
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// CA is a test TPM manufacturer: a self-signed root and an intermediate
// that issues EK certificates. Issue is safe for concurrent use.
type CA struct {
	// Root is the trust anchor (ekcert.Config.Anchors, --ek-ca).
	Root *x509.Certificate
	// Intermediate issued the EK certificates; pass Intermediate.Raw as
	// the chain, as a TPM's chain index would hold it.
	Intermediate *x509.Certificate

	tb      testing.TB
	rootKey *ecdsa.PrivateKey
	key     *ecdsa.PrivateKey
	serial  atomic.Int64
	san     pkix.Extension
}

// Option changes the CA NewCA makes.
type Option func(*caConfig)

type caConfig struct {
	rootFrom, rootTo   time.Time
	interFrom, interTo time.Time
	attrs              Attributes
}

// Attributes are the TPM attributes of the EK certificates a CA issues.
type Attributes struct {
	Manufacturer, Model, Version string
}

// IntermediateValidity sets the intermediate's validity (default: a year
// ago to in ten years).
func IntermediateValidity(notBefore, notAfter time.Time) Option {
	return func(c *caConfig) { c.interFrom, c.interTo = notBefore, notAfter }
}

// RootValidity sets the root's validity (default: two years ago to in
// twenty years).
func RootValidity(notBefore, notAfter time.Time) Option {
	return func(c *caConfig) { c.rootFrom, c.rootTo = notBefore, notAfter }
}

// WithAttributes sets the TPM attributes of the EK certificates (default:
// Infineon, "id:49465800", model "SLB9672", version "id:00100100").
func WithAttributes(a Attributes) Option {
	return func(c *caConfig) { c.attrs = a }
}

// NewCA makes a test manufacturer CA.
func NewCA(tb testing.TB, opts ...Option) *CA {
	tb.Helper()
	now := time.Now()
	cfg := caConfig{
		rootFrom: now.AddDate(-2, 0, 0), rootTo: now.AddDate(20, 0, 0),
		interFrom: now.AddDate(-1, 0, 0), interTo: now.AddDate(10, 0, 0),
		attrs: Attributes{Manufacturer: "id:49465800", Model: "SLB9672", Version: "id:00100100"},
	}
	for _, o := range opts {
		o(&cfg)
	}
	ca := &CA{tb: tb, rootKey: newKey(tb), key: newKey(tb)}
	ca.Root = create(tb, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"ekcerttest"}, CommonName: "ekcerttest TPM EK Root CA"},
		NotBefore:             cfg.rootFrom,
		NotAfter:              cfg.rootTo,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, &ca.rootKey.PublicKey, ca.rootKey)
	ca.Intermediate = create(tb, &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{Organization: []string{"ekcerttest"}, CommonName: "ekcerttest TPM EK Intermediate CA"},
		NotBefore:             cfg.interFrom,
		NotAfter:              cfg.interTo,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, ca.Root, &ca.key.PublicKey, ca.rootKey)
	ca.san = SAN(tb, cfg.attrs)
	return ca
}

// RootPEM is the root in PEM, as an --ek-ca file holds it.
func (ca *CA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
}

// Issue returns the DER of an EK certificate for ek (*rsa.PublicKey or
// *ecdsa.PublicKey), valid from a day ago for twenty years. It fails the
// test on error, so call it from the test's goroutine or use Leaf.
func (ca *CA) Issue(ek crypto.PublicKey) []byte {
	der, err := ca.Leaf(Leaf{EK: ek})
	if err != nil {
		ca.tb.Fatal(err)
	}
	return der
}

// Leaf is what an EK certificate says. Zero fields take Issue's defaults.
type Leaf struct {
	EK                  crypto.PublicKey
	NotBefore, NotAfter time.Time
	// SAN replaces the subject alternative name extension (see SAN).
	SAN *pkix.Extension
	// ExtraExtensions are added as they are.
	ExtraExtensions []pkix.Extension
	// ExtKeyUsage replaces tcg-kp-EKCertificate when set.
	ExtKeyUsage []x509.ExtKeyUsage
}

// Leaf returns the DER of an EK certificate as l describes, signed by the
// intermediate.
func (ca *CA) Leaf(l Leaf) ([]byte, error) {
	now := time.Now()
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-24 * time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = now.AddDate(20, 0, 0)
	}
	san := ca.san
	if l.SAN != nil {
		san = *l.SAN
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000 + ca.serial.Add(1)),
		NotBefore:             l.NotBefore,
		NotAfter:              l.NotAfter,
		BasicConstraintsValid: true,
		ExtraExtensions:       append([]pkix.Extension{san}, l.ExtraExtensions...),
		ExtKeyUsage:           l.ExtKeyUsage,
	}
	if l.ExtKeyUsage == nil {
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{oidEKCertificate}
	}
	// The EK decrypts (RSA) or agrees keys (ECC); it never signs.
	switch l.EK.(type) {
	case *rsa.PublicKey:
		tmpl.KeyUsage = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey:
		tmpl.KeyUsage = x509.KeyUsageKeyAgreement
	default:
		return nil, fmt.Errorf("ekcerttest: EK key %T is not RSA or ECDSA", l.EK)
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Intermediate, l.EK, ca.key)
}

// SAN returns the critical subject alternative name of an EK certificate
// with an empty subject: one directory name holding the TPM attributes.
func SAN(tb testing.TB, a Attributes) pkix.Extension {
	tb.Helper()
	var names []pkix.AttributeTypeAndValue
	for _, at := range []struct {
		oid asn1.ObjectIdentifier
		v   string
	}{{oidTPMManufacturer, a.Manufacturer}, {oidTPMModel, a.Model}, {oidTPMVersion, a.Version}} {
		if at.v != "" {
			names = append(names, pkix.AttributeTypeAndValue{Type: at.oid, Value: at.v})
		}
	}
	ext, err := x509ext.MarshalSubjectAltName(&x509ext.SubjectAltName{
		DirectoryNames: []pkix.Name{{ExtraNames: names}},
	}, true)
	if err != nil {
		tb.Fatal(err)
	}
	return ext
}

// ECCKey returns a fresh P-256 EK key (a millisecond or less).
func ECCKey(tb testing.TB) *ecdsa.PrivateKey {
	return newKey(tb)
}

// RSAKey returns a fresh RSA-2048 EK key (tens of milliseconds).
func RSAKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// TPMPublic returns the TPM2B_PUBLIC of ek as a TPM reports an EK made
// from the default templates (TCG EK Credential Profile 2.0, appendix B,
// templates L-1 RSA 2048 and L-2 ECC P-256), the form DPS takes.
func TPMPublic(tb testing.TB, ek crypto.PublicKey) []byte {
	tb.Helper()
	var pub tpm2.TPMTPublic
	switch k := ek.(type) {
	case *rsa.PublicKey:
		// The template's parameters are shared: fit the key to them.
		if k.N.BitLen() != 2048 || k.E != 65537 {
			tb.Fatalf("ekcerttest: RSA EK of %d bits, exponent %d; want 2048, 65537", k.N.BitLen(), k.E)
		}
		pub = tpm2.RSAEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			tb.Fatalf("ekcerttest: EK curve %s, want P-256", k.Curve.Params().Name)
		}
		pub = tpm2.ECCEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
		})
	default:
		tb.Fatalf("ekcerttest: EK key %T is not RSA or ECDSA", ek)
	}
	return tpm2.Marshal(tpm2.New2B(pub))
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func create(tb testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	tb.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
