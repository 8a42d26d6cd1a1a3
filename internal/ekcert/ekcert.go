// Package ekcert checks that a TPM's endorsement key is a genuine chip's:
// its EK certificate (from NV 0x01c00002 RSA or 0x01c0000a ECC) certifies
// that EK and chains, through the intermediates the TPM stores or the
// manufacturers publish, to a manufacturer's root. The manufacturers' CA
// certificates are embedded; an operator adds anchors of their own.
//
// EK certificates are parsed with go-attestation, which knows their
// quirks (the NV header and padding, the critical subject alternative name
// holding the TPM's manufacturer, model and version). The policy, in
// docs/enroll.md "Manufacturer CA certificates":
//   - trust anchors are the embedded self-signed roots, the embedded
//     certificates designated as anchors (a vendor's root whose issuer is
//     not published), embedded intermediates that their embedded root
//     signed with SHA-1, and Config.Anchors; everything else, embedded or
//     read from the TPM, is only an intermediate;
//   - a chip outlives its certificates: an expired certificate in the
//     chain (the EK certificate included) is accepted and reported in
//     Result.Warnings, provided it had not expired when the EK certificate
//     was issued (its NotBefore); a certificate not yet valid is refused;
//   - the only unhandled critical extension tolerated is the EK
//     certificate's subject alternative name made of TCG attributes;
//   - an EK certificate with an extended key usage must allow
//     tcg-kp-EKCertificate (2.23.133.8.1) or any usage.
package ekcert

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-attestation/attest"
	x509ext "github.com/google/go-attestation/x509"
	"github.com/google/go-tpm/tpm2"
)

// Kinds of failure, for errors.Is. Every error Verify returns is one of
// ErrMalformed, ErrBadEK, ErrWrongKey or ErrUntrusted.
var (
	// ErrMalformed: the certificate is not one (truncated, garbage).
	ErrMalformed = errors.New("EK certificate is malformed")
	// ErrWrongKey: the certificate certifies another key than the EK.
	ErrWrongKey = errors.New("EK certificate certifies another key")
	// ErrUntrusted: no chain to a trust anchor.
	ErrUntrusted = errors.New("EK certificate does not chain to a trusted manufacturer CA")
	// ErrNotYetValid: the EK certificate's validity starts after now. Its
	// errors are also ErrUntrusted.
	ErrNotYetValid = errors.New("EK certificate is not valid yet")
	// ErrBadEK: the EK given is not a TPM2B_PUBLIC of an RSA or ECC key.
	ErrBadEK = errors.New("EK public area is malformed")
)

// OIDs of the TCG EK Credential Profile for TPM Family 2.0 (certificate
// fields and extensions) and RFC 5280.
var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// Config is what a Verifier trusts besides the embedded certificates.
type Config struct {
	// Anchors are further trust anchors (edge-deploy enroll --ek-ca).
	// Each must be a CA certificate; it need not be self-signed.
	Anchors []*x509.Certificate
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result describes a verified EK certificate.
type Result struct {
	// Manufacturer is the TPM manufacturer's name ("Infineon"), from the
	// certificate's TPM attributes; ManufacturerID their TCG vendor ID
	// ("id:49465800"). Manufacturer is empty when the ID is not in the
	// TCG registry (see VendorName).
	Manufacturer, ManufacturerID string
	// Model and Version are the TPM model and firmware version attributes.
	Model, Version string
	// Chain is the verified chain, the EK certificate first and the anchor
	// last.
	Chain []*x509.Certificate
	// Anchor names the trust anchor the chain ends at: the embedded file
	// (ca/NAME) of a manufacturer CA, or the subject of an anchor the
	// operator gave (Config.Anchors). OperatorAnchor says it is the
	// latter: the operator vouches for the EK, not a bundled
	// manufacturer root. A chain to either is preferred to the other only
	// when it has fewer warnings; else the manufacturer's wins.
	Anchor         string
	OperatorAnchor bool
	// Warnings are what the policy accepted but a reader should know (an
	// expired intermediate, …).
	Warnings []string
}

// Verifier checks EK certificates. It is safe for concurrent use.
type Verifier struct {
	cfg Config
	// roots and intermediates hold lifted copies (see lift); orig maps
	// each copy back.
	roots, intermediates *x509.CertPool
	orig                 map[*x509.Certificate]*x509.Certificate
	// anchors names each anchor by its DER.
	anchors map[string]anchor
}

// anchor is what a Result says of a trust anchor.
type anchor struct {
	name     string
	operator bool
}

// New returns a Verifier trusting the embedded manufacturer CAs and
// cfg.Anchors.
func New(cfg Config) (*Verifier, error) {
	cas, err := embedded()
	if err != nil {
		return nil, fmt.Errorf("embedded manufacturer CAs: %w", err)
	}
	return newVerifier(cfg, cas)
}

// newVerifier returns a Verifier trusting the embedded certificates cas
// and cfg.Anchors.
func newVerifier(cfg Config, cas []embeddedCA) (*Verifier, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, roots: x509.NewCertPool(), intermediates: x509.NewCertPool(),
		orig: map[*x509.Certificate]*x509.Certificate{}, anchors: map[string]anchor{}}
	for _, c := range cas {
		l := lift(c.cert)
		v.orig[l] = c.cert
		if c.anchor {
			v.roots.AddCert(l)
			v.anchors[string(c.cert.Raw)] = anchor{name: c.file}
		} else {
			v.intermediates.AddCert(l)
		}
	}
	for _, a := range cfg.Anchors {
		if a == nil || !a.BasicConstraintsValid || !a.IsCA {
			return nil, fmt.Errorf("EK CA %s is not a CA certificate", subject(a))
		}
		if _, ok := v.anchors[string(a.Raw)]; ok {
			continue // embedded already: the manufacturer's
		}
		l := lift(a)
		v.orig[l] = a
		v.roots.AddCert(l)
		v.anchors[string(a.Raw)] = anchor{name: a.Subject.String(), operator: true}
	}
	return v, nil
}

// ParsePEM returns the certificates of a PEM file (--ek-ca). Text around
// the PEM blocks is ignored; a block of another type is an error.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not a CERTIFICATE", len(certs)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// Verify checks that cert (DER as read from NV, padding allowed)
// certifies ek (the TPM2B_PUBLIC of the EK, as DPS takes it) and chains to
// a trust anchor through chain (DER, in any order, as read from the TPM's
// chain indices) and the embedded intermediates. Each element of chain may
// hold several certificates back to back, padded as in NV.
func (v *Verifier) Verify(ek, cert []byte, chain [][]byte) (*Result, error) {
	ekPub, err := ekPublic(ek)
	if err != nil {
		return nil, err
	}
	leaf, err := attest.ParseEKCertificate(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	res := &Result{}
	readAttributes(leaf, res)
	attrWarnings := res.Warnings
	res.Warnings = nil
	key, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("%w: unsupported public key algorithm %v", ErrMalformed, leaf.PublicKeyAlgorithm)
	}
	if !key.Equal(ekPub) {
		return nil, fmt.Errorf("%w: the certificate (serial %x, issuer %s) is for another %v key", ErrWrongKey, leaf.SerialNumber, leaf.Issuer, leaf.PublicKeyAlgorithm)
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("%w: the EK certificate is a CA certificate", ErrUntrusted)
	}
	if !ekUsage(leaf) {
		return nil, fmt.Errorf("%w: the certificate's extended key usage excludes tcg-kp-EKCertificate", ErrUntrusted)
	}
	now := v.cfg.Now()
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: %w: valid from %s", ErrUntrusted, ErrNotYetValid, leaf.NotBefore.UTC().Format(time.RFC3339))
	}

	// Expiry is the policy's, not crypto/x509's: Go verifies copies whose
	// NotAfter is lifted (signatures cover the raw bytes, which stay), and
	// the chain found is judged on the originals.
	inter := v.intermediates.Clone()
	orig := map[*x509.Certificate]*x509.Certificate{}
	for i, der := range chain {
		certs, err := splitCerts(der)
		if err != nil {
			return nil, fmt.Errorf("%w: chain element %d: %v", ErrMalformed, i, err)
		}
		for _, c := range certs {
			l := lift(c)
			orig[l] = c
			inter.AddCert(l)
		}
	}
	l := lift(leaf)
	orig[l] = leaf
	chains, err := l.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: inter,
		CurrentTime:   now,
		// EK certificates serve no TLS purpose; ekUsage checked the leaf.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	var refusal error
	for _, lifted := range chains {
		c := make([]*x509.Certificate, len(lifted))
		for i, l := range lifted {
			if c[i] = orig[l]; c[i] == nil {
				c[i] = v.orig[l]
			}
		}
		if slices.Contains(c, nil) { // cannot happen: every copy is mapped
			refusal = errors.New("a certificate of the chain is unknown")
			continue
		}
		warnings, err := expiry(c, now)
		if err != nil {
			refusal = err
			continue
		}
		a := v.anchors[string(c[len(c)-1].Raw)]
		if res.Chain == nil || len(warnings) < len(res.Warnings) ||
			len(warnings) == len(res.Warnings) && res.OperatorAnchor && !a.operator {
			res.Chain, res.Warnings, res.Anchor, res.OperatorAnchor = c, warnings, a.name, a.operator
		}
	}
	if res.Chain == nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, refusal)
	}
	res.Warnings = append(res.Warnings, attrWarnings...)
	return res, nil
}

// expiry applies the expiry policy to a chain, the EK certificate first:
// a chip outlives its certificates, so an expired certificate is accepted
// with a warning, provided it had not expired when the EK certificate was
// issued (no CA issues after its end; one that did was misused).
func expiry(chain []*x509.Certificate, now time.Time) ([]string, error) {
	issued := chain[0].NotBefore
	var warnings []string
	for i, c := range chain {
		if i > 0 && issued.After(c.NotAfter) {
			return nil, fmt.Errorf("the EK certificate was issued on %s, after %s expired on %s",
				issued.UTC().Format(time.DateOnly), subject(c), c.NotAfter.UTC().Format(time.DateOnly))
		}
		if now.After(c.NotAfter) {
			warnings = append(warnings, fmt.Sprintf("%s expired on %s; accepted as it was valid when the EK certificate was issued",
				subject(c), c.NotAfter.UTC().Format(time.DateOnly)))
		}
	}
	return warnings, nil
}

// lift returns a copy of c that never expires.
func lift(c *x509.Certificate) *x509.Certificate {
	l := *c
	l.NotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	return &l
}

// ekPublic decodes a TPM2B_PUBLIC (TPM 2.0 Part 2, 12.2.5): a 2-byte size,
// then exactly that many bytes of TPMT_PUBLIC.
func ekPublic(ek []byte) (crypto.PublicKey, error) {
	if len(ek) < 2 || int(binary.BigEndian.Uint16(ek)) != len(ek)-2 {
		return nil, fmt.Errorf("%w: %d bytes do not hold a TPM2B_PUBLIC", ErrBadEK, len(ek))
	}
	b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](ek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	pub, err := b.Contents()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEK, err)
	}
	return k, nil
}

// readAttributes fills res from the TPM attributes in the subject
// alternative name (TCG EK Credential Profile 2.0, "Subject Alternative
// Name"). The extension
// is critical when the subject is empty, and crypto/x509 does not handle a
// name made only of directory names: once it parses, it is removed from
// the unhandled critical extensions. Any other unhandled critical
// extension is left for Verify to refuse.
func readAttributes(leaf *x509.Certificate, res *Result) {
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		san, err := x509ext.ParseSubjectAltName(ext)
		if err != nil {
			// Names other than directory names and permanent
			// identifiers: crypto/x509 handles the extension, or leaves it
			// unhandled and Verify refuses it if critical.
			res.Warnings = append(res.Warnings, "no TPM attributes read from the subject alternative name: "+err.Error())
			continue
		}
		for _, dn := range san.DirectoryNames {
			for _, a := range dn.Names {
				s, _ := a.Value.(string)
				switch {
				case a.Type.Equal(oidTPMManufacturer):
					res.ManufacturerID = s
				case a.Type.Equal(oidTPMModel):
					res.Model = s
				case a.Type.Equal(oidTPMVersion):
					res.Version = s
				}
			}
		}
		leaf.UnhandledCriticalExtensions = slices.DeleteFunc(leaf.UnhandledCriticalExtensions, func(id asn1.ObjectIdentifier) bool {
			return id.Equal(oidSubjectAltName)
		})
	}
	if res.ManufacturerID == "" {
		res.Warnings = append(res.Warnings, "the EK certificate names no TPM manufacturer")
	}
	if id, ok := parseVendorID(res.ManufacturerID); ok {
		res.Manufacturer = VendorName(id)
	}
}

// ekUsage reports whether leaf may be an EK certificate by its extended
// key usage: absent, any, or tcg-kp-EKCertificate.
func ekUsage(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) ||
		slices.ContainsFunc(leaf.UnknownExtKeyUsage, oidEKCertificate.Equal)
}

// splitCerts reads the certificates in one chain index: DER certificates
// back to back, then maybe padding (0x00 or 0xff) up to the index size.
func splitCerts(der []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(der) > 0 && !padding(der) {
		var raw asn1.RawValue
		rest, err := asn1.Unmarshal(der, &raw)
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(raw.FullBytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
		der = rest
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

func padding(b []byte) bool {
	return len(bytes.Trim(b, "\x00\xff")) == 0
}

// subject names a certificate for messages: its subject, else its serial.
func subject(c *x509.Certificate) string {
	switch {
	case c == nil:
		return "(nil)"
	case len(c.Subject.String()) > 0:
		return fmt.Sprintf("%q", c.Subject.String())
	case c.SerialNumber != nil:
		return fmt.Sprintf("serial %x", c.SerialNumber)
	}
	return "(no subject)"
}
