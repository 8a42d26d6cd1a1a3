package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/ekcert"
)

// saltTrust is how far the public key that salts a session is known to be
// the TPM's own.
type saltTrust int

const (
	// saltUnauthenticated: the key's public part is only what the TPM (or
	// whatever sits on the bus) answered to TPM2_ReadPublic. A passive
	// listener cannot recover the salt; an active interposer can substitute
	// its own key.
	saltUnauthenticated saltTrust = iota
	// saltCertified: the EK, certified by the EK certificate in the TPM's
	// NV, which does not chain to a known manufacturer root (a software
	// TPM's, or one whose manufacturer CA is not embedded).
	saltCertified
	// saltVerified: the EK, certified by an EK certificate that chains to
	// a manufacturer root (internal/ekcert).
	saltVerified
)

// errSubstituted: what the TPM answered about a key contradicts itself or
// its certificate; something on the bus may be altering answers.
var errSubstituted = errors.New("the TPM's answers about its key do not add up; something between this program and the TPM may be altering them")

// saltKey returns the key whose public part salts the session that carries
// the hub key into the TPM, and how far that public part is authenticated
// (docs/hub-identity.md#in-the-tpm). It prefers the EK when the RSA EK
// certificate in NV certifies it, verified to a manufacturer root when
// internal/ekcert knows the root; without an EK certificate it falls back
// to the SRK. Either way, the name the TPM computed from the key's public
// area must match the one computed here from the public area answered: a
// public area substituted alone is caught. An EK certificate that
// certifies another key than the EK answered is refused: that is what
// substituting the EK's public area looks like. The caller holds t.mu.
func (t *TPM) saltKey() (*key, saltTrust, error) {
	ek, err := t.readPersistent(EKHandle)
	if err != nil {
		return nil, 0, fmt.Errorf("read endorsement key at %#x (run identity first): %w", uint32(EKHandle), err)
	}
	if err := checkName(ek); err != nil {
		return nil, 0, err
	}
	var id Identity
	if err := t.ekCredentials(ek, &id); err != nil {
		return nil, 0, err
	}
	for _, e := range id.CertificateErrors {
		var ce *CertificateError
		if errors.As(e, &ce) && ce.Index == ekCertIndex && errors.Is(ce.Err, errOtherKey) {
			return nil, 0, fmt.Errorf("%w: %w", errSubstituted, ce)
		}
	}
	if id.EKCertificate != nil {
		chain := make([][]byte, len(id.EKCertificateChain))
		for i, c := range id.EKCertificateChain {
			chain[i] = c.Raw
		}
		if v, err := ekcert.New(ekcert.Config{Anchors: t.ekAnchors}); err == nil {
			if _, err := v.Verify(tpm2.Marshal(ek.pub), id.EKCertificate.Raw, chain); err == nil {
				return ek, saltVerified, nil
			}
		}
		return ek, saltCertified, nil
	}
	srk, err := t.readPersistent(SRKHandle)
	if err != nil {
		return nil, 0, fmt.Errorf("read storage root key at %#x (run identity first): %w", uint32(SRKHandle), err)
	}
	if err := checkName(srk); err != nil {
		return nil, 0, err
	}
	return srk, saltUnauthenticated, nil
}

// checkName checks that k's name, as the TPM computed it from the public
// area it holds (TPM 2.0 Part 1 §16, TPM2_ReadPublic's name), is the name
// of the public area answered.
func checkName(k *key) error {
	p, err := k.pub.Contents()
	if err != nil {
		return fmt.Errorf("%w: the public area of the key at %#x is malformed: %w", errSubstituted, uint32(k.handle), err)
	}
	name, err := tpm2.ObjectName(p)
	if err != nil || string(name.Buffer) != string(k.name.Buffer) {
		return fmt.Errorf("%w: the public area of the key at %#x does not have the name the TPM gave it", errSubstituted, uint32(k.handle))
	}
	return nil
}
