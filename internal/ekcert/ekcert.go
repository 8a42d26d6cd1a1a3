// Package ekcert checks that a TPM's endorsement key is a genuine chip's:
// its EK certificate (from NV 0x01c00002 RSA or 0x01c0000a ECC) certifies
// that EK and chains, through the intermediates the TPM stores or the
// manufacturers publish, to a manufacturer's root. The manufacturers' CA
// certificates are embedded; an operator adds anchors of their own.
package ekcert

import (
	"crypto/x509"
	"errors"
	"time"
)

// Kinds of failure, for errors.Is.
var (
	// ErrMalformed: the certificate is not one (truncated, garbage).
	ErrMalformed = errors.New("EK certificate is malformed")
	// ErrWrongKey: the certificate certifies another key than the EK.
	ErrWrongKey = errors.New("EK certificate certifies another key")
	// ErrUntrusted: no chain to a trust anchor.
	ErrUntrusted = errors.New("EK certificate does not chain to a trusted manufacturer CA")
)

// Config is what a Verifier trusts besides the embedded certificates.
type Config struct {
	// Anchors are further trust anchors (edge-deploy enroll --ek-ca).
	Anchors []*x509.Certificate
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result describes a verified EK certificate.
type Result struct {
	// Manufacturer is the TPM manufacturer's name ("Infineon"), from the
	// certificate's TPM attributes; ManufacturerID their TCG vendor ID
	// ("id:49465800").
	Manufacturer, ManufacturerID string
	// Model and Version are the TPM model and firmware version attributes.
	Model, Version string
	// Chain is the verified chain, the EK certificate first and the anchor
	// last.
	Chain []*x509.Certificate
	// Warnings are what the policy accepted but a reader should know (an
	// expired intermediate, …).
	Warnings []string
}

// Verifier checks EK certificates. It is safe for concurrent use.
type Verifier struct {
	cfg Config
}

// New returns a Verifier trusting the embedded manufacturer CAs and
// cfg.Anchors.
func New(cfg Config) (*Verifier, error) {
	return nil, errors.New("ekcert: not implemented yet")
}

// ParsePEM returns the certificates of a PEM file (--ek-ca).
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	return nil, errors.New("ekcert: not implemented yet")
}

// Verify checks that cert (DER as read from NV, padding allowed)
// certifies ek (the TPM2B_PUBLIC of the EK, as DPS takes it) and chains to
// a trust anchor through chain (DER, in any order, as read from the TPM's
// chain indices) and the embedded intermediates.
func (v *Verifier) Verify(ek, cert []byte, chain [][]byte) (*Result, error) {
	return nil, errors.New("ekcert: not implemented yet")
}
