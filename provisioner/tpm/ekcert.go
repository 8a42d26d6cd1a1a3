package tpm

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ekCertificate reads the RSA EK certificate from NV, when the manufacturer
// put one there, and checks that it certifies ek.
func (t *TPM) ekCertificate(ek *key) (*x509.Certificate, error) {
	nvp, err := tpm2.NVReadPublic{NVIndex: ekCertIndex}.Execute(t.t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read EK certificate index %#x: %w", uint32(ekCertIndex), err)
	}
	pub, err := nvp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("EK certificate index %#x: %w", uint32(ekCertIndex), err)
	}
	auth := tpm2.AuthHandle{Handle: ekCertIndex, Name: nvp.NVName, Auth: tpm2.PasswordAuth(nil)}
	hierarchy := ""
	if !pub.Attributes.AuthRead && pub.Attributes.OwnerRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)}
		hierarchy = "owner"
	}
	chunk, err := t.property(tpm2.TPMPTNVBufferMax)
	if err != nil {
		return nil, err
	}
	der := make([]byte, 0, pub.DataSize)
	for off := 0; off < int(pub.DataSize); off += int(chunk) {
		n := min(int(chunk), int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: ekCertIndex, Name: nvp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("read EK certificate: %w", explain(err, hierarchy))
		}
		der = append(der, rsp.Data.Buffer...)
	}
	cert, err := parseEKCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := certifies(cert, ek); err != nil {
		return nil, err
	}
	return cert, nil
}

// parseEKCertificate reads the certificate from the bytes of the EK
// certificate index. Some manufacturers pad the index; the certificate is
// the first DER element.
func parseEKCertificate(nv []byte) (*x509.Certificate, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(nv, &raw); err != nil {
		return nil, fmt.Errorf("EK certificate in NV %#x is not DER: %w", uint32(ekCertIndex), err)
	}
	cert, err := x509.ParseCertificate(raw.FullBytes)
	if err != nil {
		return nil, fmt.Errorf("EK certificate in NV %#x: %w", uint32(ekCertIndex), err)
	}
	return cert, nil
}

// certifies checks that cert's public key is the EK's.
func certifies(cert *x509.Certificate, ek *key) error {
	tp, err := ek.pub.Contents()
	if err != nil {
		return err
	}
	ekPub, err := tpm2.Pub(*tp)
	if err != nil {
		return fmt.Errorf("EK public key: %w", err)
	}
	cp, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !cp.Equal(ekPub) {
		return fmt.Errorf("the EK certificate in NV %#x (subject %q) does not certify the EK at %#x", uint32(ekCertIndex), cert.Subject.String(), uint32(ek.handle))
	}
	return nil
}

// property reads one TPM property.
func (t *TPM) property(p tpm2.TPMPT) (uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(p), PropertyCount: 1}.Execute(t.t)
	if err != nil {
		return 0, fmt.Errorf("read TPM property %#x: %w", uint32(p), err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, err
	}
	if len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != p {
		return 0, fmt.Errorf("TPM does not report property %#x", uint32(p))
	}
	return props.TPMProperty[0].Value, nil
}
