// Package activation holds the DPS TPM activation blob: its wire format,
// parsed by the device client before it activates the key in the TPM, and
// the server side that builds it (docs/dps-protocol.md#the-activation-blob, #building-the-blob), used by the DPS
// emulator and by tests that activate real blobs.
package activation

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ErrMalformed reports an activation blob that cannot be parsed.
var ErrMalformed = errors.New("malformed activation blob")

// Blob is the six size-prefixed fields DPS sends as authenticationKey, in
// wire order. Each field holds the body without its 2-byte size.
type Blob struct {
	CredentialBlob []byte // TPM2B_ID_OBJECT: integrity HMAC and encrypted inner key
	Secret         []byte // TPM2B_ENCRYPTED_SECRET: seed encrypted to the EK
	Duplicate      []byte // TPM2B_PRIVATE: the HMAC key, wrapped twice
	InSymSeed      []byte // TPM2B_ENCRYPTED_SECRET: seed encrypted to the SRK
	Public         []byte // TPMT_PUBLIC of the HMAC key
	EncURI         []byte // TPM2B_DATA; opaque, clients ignore it
}

func (b *Blob) fields() []*[]byte {
	return []*[]byte{&b.CredentialBlob, &b.Secret, &b.Duplicate, &b.InSymSeed, &b.Public, &b.EncURI}
}

// Parse splits an activation blob into its six fields. Nothing may follow
// the sixth field, and the public area must be a KEYEDHASH key, the only kind
// DPS sends.
func Parse(data []byte) (*Blob, error) {
	var b Blob
	rest := data
	for i, f := range b.fields() {
		if len(rest) < 2 {
			return nil, fmt.Errorf("%w: field %d of 6: missing size (blob is %d bytes)", ErrMalformed, i+1, len(data))
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest)-2 < n {
			return nil, fmt.Errorf("%w: field %d of 6 claims %d bytes, %d left", ErrMalformed, i+1, n, len(rest)-2)
		}
		*f = rest[2 : 2+n : 2+n]
		rest = rest[2+n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the sixth field", ErrMalformed, len(rest))
	}
	pub, err := b.PublicArea()
	if err != nil {
		return nil, err
	}
	if pub.Type != tpm2.TPMAlgKeyedHash {
		return nil, fmt.Errorf("%w: key type %#x, want KEYEDHASH", ErrMalformed, uint16(pub.Type))
	}
	for i, f := range []struct {
		name string
		v    []byte
	}{{"credential", b.CredentialBlob}, {"secret", b.Secret}, {"duplicate", b.Duplicate}, {"seed", b.InSymSeed}} {
		if len(f.v) == 0 {
			return nil, fmt.Errorf("%w: field %d (%s) is empty", ErrMalformed, i+1, f.name)
		}
	}
	return &b, nil
}

// PublicArea decodes the public area of the HMAC key.
func (b *Blob) PublicArea() (*tpm2.TPMTPublic, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: field 5 is not a TPMT_PUBLIC: %v", ErrMalformed, err)
	}
	// Unmarshal ignores trailing bytes; a public area with extra bytes would
	// give a Name that does not match the one the TPM computes.
	if len(tpm2.Marshal(pub)) != len(b.Public) {
		return nil, fmt.Errorf("%w: field 5 has bytes after the TPMT_PUBLIC", ErrMalformed)
	}
	return pub, nil
}

// Marshal returns the wire form: six big-endian size-prefixed fields.
func (b *Blob) Marshal() []byte {
	var out []byte
	for _, f := range b.fields() {
		out = binary.BigEndian.AppendUint16(out, uint16(len(*f)))
		out = append(out, *f...)
	}
	return out
}
