package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NV indices the TPM manufacturer provisions EK credentials in (TCG EK
// Credential Profile for TPM Family 2.0: §2.2.1.4 "Low Range" in version
// 2.4 revision 3 for the EK certificates, §2.2.1.5.2 in version 2.5
// revision 2 for the chain).
const (
	ekCertIndex    tpm2.TPMHandle = 0x01c00002 // RSA 2048 EK certificate
	eccEKCertIndex tpm2.TPMHandle = 0x01c0000a // ECC NIST P256 EK certificate
	// The EK certificate chain: every certificate but the root, X.509 DER,
	// concatenated, in no required order, written from the first index
	// on. A chain or a certificate that does not fit in one index
	// overflows into the next numerically larger one.
	ekChainFirst tpm2.TPMHandle = 0x01c00100
	ekChainLast  tpm2.TPMHandle = 0x01c001ff
)

// CertificateError is a certificate in NV that Identity leaves out because
// it is malformed or certifies another key than the EK. Identity still
// succeeds: whoever enrolls the device decides what to trust.
type CertificateError struct {
	// What names the certificate: "EK certificate", "ECC EK certificate"
	// or "EK certificate chain".
	What string
	// Index is the NV index it was read from; for the chain, the index the
	// bad certificate starts in.
	Index tpm2.TPMHandle
	Err   error
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("%s in NV %#08x left out: %v", e.What, uint32(e.Index), e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// ekCredentials reads the EK certificates and chain into id. A certificate
// that cannot be used is reported in id.CertificateErrors; only a wrong
// owner password or a TPM that cannot be reached is an error.
func (t *TPM) ekCredentials(ek *key, id *Identity) error {
	der, ok, err := t.readCertIndex("EK certificate", ekCertIndex, id)
	if err != nil {
		return err
	}
	if ok {
		cert, err := parseCertificate(der)
		if err == nil {
			err = certifies(cert, ek)
		}
		if err != nil {
			id.CertificateErrors = append(id.CertificateErrors, &CertificateError{"EK certificate", ekCertIndex, err})
		} else {
			id.EKCertificate = cert
		}
	}

	der, ok, err = t.readCertIndex("ECC EK certificate", eccEKCertIndex, id)
	if err != nil {
		return err
	}
	if ok {
		// Only parsed: the ECC EK is not used here, and creating it only to
		// compare keys would cost a key generation in the TPM.
		cert, err := parseCertificate(der)
		if err == nil {
			err = isP256(cert)
		}
		if err != nil {
			id.CertificateErrors = append(id.CertificateErrors, &CertificateError{"ECC EK certificate", eccEKCertIndex, err})
		} else {
			id.ECCEKCertificate = cert
		}
	}

	indices, err := t.nvIndices(ekChainFirst, ekChainLast)
	if err != nil {
		return fmt.Errorf("list the EK certificate chain indices: %w", err)
	}
	var chain []byte
	starts := make([]int, len(indices)) // where each index begins in chain
	for i, h := range indices {
		data, _, err := t.readCertIndex("EK certificate chain", h, id)
		if err != nil {
			return err
		}
		starts[i] = len(chain)
		chain = append(chain, data...)
	}
	certs, off, err := parseCertificateChain(chain)
	id.EKCertificateChain = certs
	if err != nil {
		at := ekChainFirst
		for i, s := range starts {
			if s <= off {
				at = indices[i]
			}
		}
		id.CertificateErrors = append(id.CertificateErrors, &CertificateError{"EK certificate chain", at, err})
	}
	return nil
}

// readCertIndex reads a certificate index; ok is false when there is none
// to parse. When the TPM refuses to read it (an index only the platform
// may read, or one read-locked), that is reported in id.CertificateErrors;
// a wrong owner password or a transport failure is an error.
func (t *TPM) readCertIndex(what string, index tpm2.TPMHandle, id *Identity) (data []byte, ok bool, err error) {
	data, err = t.readNV(index)
	var rc tpm2.TPMRC
	var fmt1 tpm2.TPMFmt1Error
	switch {
	case err == nil:
		return data, true, nil
	case errors.Is(err, errNoIndex):
		return nil, false, nil
	case errors.Is(err, ErrAuthorization) || errors.Is(err, ErrLockout):
		return nil, false, fmt.Errorf("read %s: %w", what, err)
	case errors.Is(err, errUnreadable) || errors.As(err, &rc) || errors.As(err, &fmt1):
		id.CertificateErrors = append(id.CertificateErrors, &CertificateError{what, index, err})
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("read %s: %w", what, err)
}

// errNoIndex: the NV index is not defined, or defined and never written.
var errNoIndex = errors.New("no such NV index")

// errUnreadable: the NV index can be read neither with its own password
// nor with the owner's.
var errUnreadable = errors.New("readable only with the platform's authorization or a policy")

// readNV reads an NV index whole, in chunks no larger than the TPM's
// TPM_PT_NV_BUFFER_MAX. An index readable only with the owner's
// authorization (OwnerRead without AuthRead) is read with the owner
// password.
func (t *TPM) readNV(index tpm2.TPMHandle) ([]byte, error) {
	nvp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t.t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, errNoIndex
	}
	if err != nil {
		return nil, fmt.Errorf("read the public area of NV %#08x: %w", uint32(index), err)
	}
	pub, err := nvp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("NV %#08x: %w", uint32(index), err)
	}
	if !pub.Attributes.Written {
		return nil, errNoIndex
	}
	auth := tpm2.AuthHandle{Handle: index, Name: nvp.NVName, Auth: tpm2.PasswordAuth(nil)}
	hierarchy := ""
	switch {
	case pub.Attributes.AuthRead:
	case pub.Attributes.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)}
		hierarchy = "owner"
	default:
		return nil, errUnreadable
	}
	chunk, err := t.property(tpm2.TPMPTNVBufferMax)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, pub.DataSize)
	for off := 0; off < int(pub.DataSize); off += int(chunk) {
		n := min(int(chunk), int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: nvp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("read NV %#08x: %w", uint32(index), explain(err, hierarchy))
		}
		data = append(data, rsp.Data.Buffer...)
	}
	return data, nil
}

// nvIndices lists the defined NV indices from first to last, in order.
func (t *TPM) nvIndices(first, last tpm2.TPMHandle) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	for next := first; ; {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(next), PropertyCount: uint32(last - next + 1)}.Execute(t.t)
		if err != nil {
			return nil, err
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, err
		}
		for _, h := range hl.Handle {
			if h < next || h > last {
				return out, nil
			}
			out = append(out, h)
		}
		// A TPM returns as many handles as fit in its response buffer and
		// sets moreData when there are others.
		if !rsp.MoreData || len(hl.Handle) == 0 || hl.Handle[len(hl.Handle)-1] == last {
			return out, nil
		}
		next = hl.Handle[len(hl.Handle)-1] + 1
	}
}

// parseCertificate reads the certificate from the bytes of an EK
// certificate index. Some manufacturers pad the index; the certificate is
// the first DER element.
func parseCertificate(nv []byte) (*x509.Certificate, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(nv, &raw); err != nil {
		return nil, fmt.Errorf("not DER: %w", err)
	}
	return x509.ParseCertificate(raw.FullBytes)
}

// parseCertificateChain reads the concatenated DER certificates of the
// chain indices, skipping the padding (0x00 or 0xff, neither of which
// starts a DER SEQUENCE) an index may end with. On error it returns the
// certificates before the bad one, and the offset where that one starts.
func parseCertificateChain(data []byte) ([]*x509.Certificate, int, error) {
	var certs []*x509.Certificate
	off := 0
	for {
		for off < len(data) && (data[off] == 0x00 || data[off] == 0xff) {
			off++
		}
		if off == len(data) {
			return certs, off, nil
		}
		var raw asn1.RawValue
		rest, err := asn1.Unmarshal(data[off:], &raw)
		if err != nil {
			return certs, off, fmt.Errorf("certificate %d is not DER: %w", len(certs)+1, err)
		}
		cert, err := x509.ParseCertificate(raw.FullBytes)
		if err != nil {
			return certs, off, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
		off = len(data) - len(rest)
	}
}

// errOtherKey: an EK certificate certifies another key than the EK.
var errOtherKey = errors.New("does not certify the EK")

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
		return fmt.Errorf("it (subject %q) %w at %#x", cert.Subject.String(), errOtherKey, uint32(ek.handle))
	}
	return nil
}

// isP256 checks that cert certifies an ECC NIST P-256 key, as the ECC EK
// certificate index holds.
func isP256(cert *x509.Certificate) error {
	kind := cert.PublicKeyAlgorithm.String()
	if k, ok := cert.PublicKey.(*ecdsa.PublicKey); ok {
		if k.Curve == elliptic.P256() {
			return nil
		}
		kind = "ECC " + k.Curve.Params().Name
	}
	return fmt.Errorf("its key (subject %q) is %s, not ECC P-256", cert.Subject.String(), kind)
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
