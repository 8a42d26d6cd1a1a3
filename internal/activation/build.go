package activation

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// ErrKey reports an EK or SRK that cannot receive an activation blob.
var ErrKey = errors.New("unsuitable TPM key")

// ekPolicy is the TCG EK authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
// (docs/dps-protocol.md#ek-and-srk).
var ekPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
	0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
}

// EKPolicy returns the authPolicy every TCG EK template carries.
func EKPolicy() []byte { return append([]byte(nil), ekPolicy...) }

// innerKeySize is the inner wrapper key: AES-128, as real DPS blobs show
// (encIdentity of 18 bytes, docs/dps-protocol.md#the-activation-blob).
const innerKeySize = 16

// DecodePublic decodes a marshalled TPM2B_PUBLIC (with its size prefix), the
// form DPS carries EK and SRK in.
func DecodePublic(tpm2b []byte) (*tpm2.TPMTPublic, error) {
	if len(tpm2b) < 2 || int(binary.BigEndian.Uint16(tpm2b)) != len(tpm2b)-2 {
		return nil, fmt.Errorf("%w: not a TPM2B_PUBLIC (size prefix does not match %d bytes)", ErrKey, len(tpm2b))
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpm2b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: not a TPMT_PUBLIC: %v", ErrKey, err)
	}
	if len(tpm2.Marshal(pub)) != len(tpm2b)-2 {
		return nil, fmt.Errorf("%w: bytes after the TPMT_PUBLIC", ErrKey)
	}
	return pub, nil
}

// CheckStorageKey checks that pub is an RSA-2048 restricted decryption key
// with SHA-256 names and AES-128-CFB protection: the shape of a TCG EK or
// SRK, and what the blob's wrapping assumes.
func CheckStorageKey(pub *tpm2.TPMTPublic) error {
	if pub.Type != tpm2.TPMAlgRSA {
		return fmt.Errorf("%w: type %#x, want RSA", ErrKey, uint16(pub.Type))
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: name algorithm %#x, want SHA-256", ErrKey, uint16(pub.NameAlg))
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return fmt.Errorf("%w: not a restricted decryption key", ErrKey)
	}
	rsa, err := pub.Parameters.RSADetail()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKey, err)
	}
	if rsa.KeyBits != 2048 {
		return fmt.Errorf("%w: RSA-%d, want RSA-2048", ErrKey, rsa.KeyBits)
	}
	if rsa.Symmetric.Algorithm != tpm2.TPMAlgAES {
		return fmt.Errorf("%w: symmetric algorithm %#x, want AES", ErrKey, uint16(rsa.Symmetric.Algorithm))
	}
	bits, err := rsa.Symmetric.KeyBits.AES()
	if err != nil || *bits != 128 {
		return fmt.Errorf("%w: symmetric key is not AES-128", ErrKey)
	}
	mode, err := rsa.Symmetric.Mode.AES()
	if err != nil || *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("%w: symmetric mode is not CFB", ErrKey)
	}
	n, err := pub.Unique.RSA()
	if err != nil || len(n.Buffer) != 256 {
		return fmt.Errorf("%w: RSA modulus is not 256 bytes", ErrKey)
	}
	return nil
}

// Build makes an activation blob that lets only the TPM holding ek and srk
// (TPM2B_PUBLIC bytes, as a device sends them) import key as an HMAC-SHA256
// key, following docs/dps-protocol.md#building-the-blob: the key is duplicated to the SRK under an
// AES-128-CFB inner wrapper, and the inner key travels as a credential to
// the EK bound to the SRK's name. encURI may be nil.
func Build(rand io.Reader, ek, srk, key, encURI []byte) ([]byte, error) {
	ekPub, err := DecodePublic(ek)
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	if err := CheckStorageKey(ekPub); err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	srkPub, err := DecodePublic(srk)
	if err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	if err := CheckStorageKey(srkPub); err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	if len(key) == 0 || len(key) > 128 {
		return nil, fmt.Errorf("HMAC key of %d bytes", len(key))
	}

	// The HMAC key: seedValue must be the name digest size (REF
	// CryptValidateKeys), unique = H(seed || key).
	seed := make([]byte, sha256.Size)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("random seed: %w", err)
	}
	unique := sha256.Sum256(append(append([]byte(nil), seed...), key...))
	idPub := hmacKeyPublic(unique[:])
	idPubBytes := tpm2.Marshal(idPub)
	idName, err := tpm2.ObjectName(&idPub)
	if err != nil {
		return nil, fmt.Errorf("name of the HMAC key: %w", err)
	}
	sens := tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: key}),
	})
	sens2B := binary.BigEndian.AppendUint16(nil, uint16(len(sens)))
	sens2B = append(sens2B, sens...)

	// Inner wrapper: integrity is a plain hash (REF ProduceInnerIntegrity).
	innerKey := make([]byte, innerKeySize)
	if _, err := io.ReadFull(rand, innerKey); err != nil {
		return nil, fmt.Errorf("random inner key: %w", err)
	}
	h := sha256.New()
	h.Write(sens2B)
	h.Write(idName.Buffer)
	inner := binary.BigEndian.AppendUint16(nil, sha256.Size)
	inner = h.Sum(inner)
	inner = append(inner, sens2B...)
	if err := cfb(innerKey, inner); err != nil {
		return nil, err
	}

	// Outer wrapper to the SRK (REF ProduceOuterWrap).
	srkKEM, err := tpm2.ImportEncapsulationKey(srkPub)
	if err != nil {
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	dupSeed, encDupSeed, err := srkKEM.Encapsulate(rand, "DUPLICATE")
	if err != nil {
		return nil, fmt.Errorf("encrypt seed to the SRK: %w", err)
	}
	symKey := tpm2.KDFa(crypto.SHA256, dupSeed, "STORAGE", idName.Buffer, nil, 128)
	if err := cfb(symKey, inner); err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, dupSeed, "INTEGRITY", nil, nil, sha256.Size*8))
	mac.Write(inner)
	mac.Write(idName.Buffer)
	duplicate := binary.BigEndian.AppendUint16(nil, sha256.Size)
	duplicate = mac.Sum(duplicate)
	duplicate = append(duplicate, inner...)

	// The inner key as a credential to the EK, bound to the SRK's name: the
	// device activates it with ActivateCredential(SRK, EK).
	srkName, err := tpm2.ObjectName(srkPub)
	if err != nil {
		return nil, fmt.Errorf("name of the SRK: %w", err)
	}
	ekKEM, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand, ekKEM, srkName.Buffer, innerKey)
	if err != nil {
		return nil, fmt.Errorf("credential to the EK: %w", err)
	}

	uri := append([]byte(nil), encURI...)
	if err := cfb(innerKey, uri); err != nil {
		return nil, err
	}
	b := Blob{
		CredentialBlob: idObject,
		Secret:         encSecret,
		Duplicate:      duplicate,
		InSymSeed:      encDupSeed,
		Public:         idPubBytes,
		EncURI:         uri,
	}
	return b.Marshal(), nil
}

// hmacKeyPublic is the public area of the key DPS wraps, as in real DPS blobs
// (docs/dps-protocol.md#the-activation-blob): KEYEDHASH, HMAC-SHA256, sign|userWithAuth|noDA, empty
// authPolicy. fixedTPM and fixedParent must stay clear for Import.
func hmacKeyPublic(unique []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			SignEncrypt:  true,
			UserWithAuth: true,
			NoDA:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique}),
	}
}

// cfb encrypts buf in place with AES-CFB and a zero IV, the TPM's symmetric
// protection for duplicates and credentials.
func cfb(key, buf []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("AES key: %w", err)
	}
	//lint:ignore SA1019 full-block CFB with a zero IV is what the TPM specifies.
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(buf, buf)
	return nil
}
