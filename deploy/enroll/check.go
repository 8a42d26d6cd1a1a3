package enroll

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/ekcert"
)

// Verifier checks an EK certificate: *ekcert.Verifier.
type Verifier interface {
	Verify(ek, cert []byte, chain [][]byte) (*ekcert.Result, error)
}

// Check is what the EK check found for one identity.
type Check struct {
	// Verified: the EK certificate certifies this EK and chains to a
	// trust anchor: a bundled manufacturer root, or one the operator gave
	// (OperatorAnchor).
	Verified bool `json:"verified"`
	// Anchor names that anchor: the bundled file, or the operator's
	// certificate's subject.
	Anchor         string `json:"anchor,omitempty"`
	OperatorAnchor bool   `json:"operatorAnchor,omitempty"`
	// Manufacturer, Model and Firmware are the certificate's TPM
	// attributes, when verified.
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Firmware     string `json:"firmware,omitempty"`
	// Problem says why the EK is not verified.
	Problem string `json:"problem,omitempty"`
	// WrongKey: the certificate certifies another key. Such an identity is
	// refused even when unverified EKs are allowed: its EK and
	// certificate come from two TPMs, a record mixed up on the way.
	WrongKey bool     `json:"wrongKey,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// tag is the value of the initial twin tag TagKey.
func (c *Check) tag() json.RawMessage {
	t := struct {
		Verified     bool   `json:"ekVerified"`
		Anchor       string `json:"ekAnchor,omitempty"`
		Manufacturer string `json:"manufacturer,omitempty"`
		Model        string `json:"model,omitempty"`
		Firmware     string `json:"firmware,omitempty"`
	}{Verified: c.Verified, Manufacturer: c.Manufacturer, Model: c.Model, Firmware: c.Firmware}
	switch {
	case c.Verified && c.OperatorAnchor:
		t.Anchor = "operator"
	case c.Verified:
		t.Anchor = "manufacturer"
	}
	b, _ := json.Marshal(t)
	return b
}

// decodeEK decodes and checks the EK as DPS will: an RSA-2048 restricted
// decryption key able to receive an activation blob (docs/dps-protocol.md#request-bodies).
func decodeEK(b64 string) ([]byte, error) {
	ek, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("endorsementKey is not standard base64")
	}
	pub, err := activation.DecodePublic(ek)
	if err == nil {
		err = activation.CheckStorageKey(pub)
	}
	if err != nil {
		return nil, fmt.Errorf("endorsementKey: %w", err)
	}
	return ek, nil
}

// check verifies the EK certificate of rec against v; a nil v checks
// nothing.
func check(v Verifier, rec *Record, ek []byte) *Check {
	if v == nil {
		return &Check{Problem: "EK certificates not checked"}
	}
	if rec.Certificate == "" {
		p := "no EK certificate"
		if rec.ECC != "" {
			p = "no RSA EK certificate: the ECC one does not certify the RSA EK DPS uses"
		}
		return &Check{Problem: p}
	}
	cert, err := decodeCerts(rec.Certificate)
	if err != nil || len(cert) != 1 {
		if err == nil {
			err = errors.New("more than one certificate")
		}
		return &Check{Problem: "endorsementKeyCertificate: " + err.Error()}
	}
	var chain [][]byte
	for _, c := range rec.Chain {
		ders, err := decodeCerts(c)
		if err != nil {
			return &Check{Problem: "endorsementKeyCertificateChain: " + err.Error()}
		}
		chain = append(chain, ders...)
	}
	res, err := v.Verify(ek, cert[0], chain)
	if err != nil {
		return &Check{Problem: err.Error(), WrongKey: errors.Is(err, ekcert.ErrWrongKey)}
	}
	return &Check{Verified: true, Anchor: res.Anchor, OperatorAnchor: res.OperatorAnchor,
		Manufacturer: res.Manufacturer, Model: res.Model, Firmware: res.Version, Warnings: res.Warnings}
}

// decodeCerts returns the DER of the PEM certificates in s, or of s as
// base64 DER.
func decodeCerts(s string) ([][]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "-----BEGIN") {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, errors.New("neither PEM nor base64 DER")
		}
		return [][]byte{der}, nil
	}
	var ders [][]byte
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", clip(b.Type))
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) == 0 || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("not PEM certificates")
	}
	return ders, nil
}
