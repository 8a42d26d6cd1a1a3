package activation

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// storageKey returns a marshalled TPM2B_PUBLIC from template with a fresh
// software RSA modulus: the shape of a TPM's EK or SRK.
func storageKey(t testing.TB, template tpm2.TPMTPublic) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tpm2.New2B(template))
}

func TestBuildMatchesRealDPSLayout(t *testing.T) {
	ek, srk := storageKey(t, tpm2.RSAEKTemplate), storageKey(t, tpm2.RSASRKTemplate)
	blob, err := Build(rand.Reader, ek, srk, bytes.Repeat([]byte{7}, 32), make([]byte, 108))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	// Field sizes of the real assigned-blob in docs/dps-protocol.md#the-activation-blob.
	want := []int{52, 256, 142, 256, 48, 108}
	for i, f := range [][]byte{b.CredentialBlob, b.Secret, b.Duplicate, b.InSymSeed, b.Public, b.EncURI} {
		if len(f) != want[i] {
			t.Errorf("field %d is %d bytes, want %d", i+1, len(f), want[i])
		}
	}
	if len(blob) != 874 {
		t.Errorf("blob is %d bytes, want 874 like the real one", len(blob))
	}
	// The public area has real DPS's header (docs/dps-protocol.md#the-activation-blob): KEYEDHASH, SHA-256,
	// sign|noDA|userWithAuth, empty policy, HMAC(SHA-256), 32-byte unique.
	if got, want := hex.EncodeToString(b.Public[:16]), "0008000b000404400000000500"+"0b0020"; got != want {
		t.Errorf("public area header = %s, want %s", got, want)
	}
	if !bytes.Equal(b.Marshal(), blob) {
		t.Error("Marshal(Parse(blob)) != blob")
	}
}

func TestBuildRejectsUnsuitableKeys(t *testing.T) {
	ek, srk := storageKey(t, tpm2.RSAEKTemplate), storageKey(t, tpm2.RSASRKTemplate)
	signing := tpm2.RSASRKTemplate
	signing.ObjectAttributes.Decrypt, signing.ObjectAttributes.SignEncrypt = false, true
	ecc := tpm2.Marshal(tpm2.New2B(tpm2.ECCSRKTemplate))
	for name, tc := range map[string]struct{ ek, srk []byte }{
		"no size prefix":  {ek[2:], srk},
		"trailing bytes":  {append(append([]byte(nil), ek...), 0), srk},
		"signing SRK":     {ek, storageKey(t, signing)},
		"ECC EK":          {ecc, srk},
		"empty":           {nil, srk},
		"size mismatch":   {append([]byte{0xff, 0xff}, ek[2:]...), srk},
		"srk not decoded": {ek, []byte{0, 1, 0}},
	} {
		if _, err := Build(rand.Reader, tc.ek, tc.srk, make([]byte, 32), nil); !errors.Is(err, ErrKey) {
			t.Errorf("%s: Build = %v, want ErrKey", name, err)
		}
	}
}

// seedBlobs are the table of Parse inputs, good and bad, shared with the fuzzer.
func seedBlobs(t testing.TB) map[string][]byte {
	ek, srk := storageKey(t, tpm2.RSAEKTemplate), storageKey(t, tpm2.RSASRKTemplate)
	good, err := Build(rand.Reader, ek, srk, make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	five := good[:len(good)-2] // without the sixth field
	bigSize := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(bigSize, 0xffff)
	return map[string][]byte{
		"good":          good,
		"five fields":   five,
		"trailing":      append(append([]byte(nil), good...), 1, 2),
		"size too big":  bigSize,
		"empty":         {},
		"one byte":      {0},
		"empty fields":  make([]byte, 12),
		"public not KH": (&Blob{[]byte{1}, []byte{1}, []byte{1}, []byte{1}, tpm2.Marshal(tpm2.RSASRKTemplate), nil}).Marshal(),
		"public junk":   (&Blob{[]byte{1}, []byte{1}, []byte{1}, []byte{1}, []byte{0, 8, 0}, nil}).Marshal(),
	}
}

func TestParse(t *testing.T) {
	for name, blob := range seedBlobs(t) {
		_, err := Parse(blob)
		if name == "good" {
			if err != nil {
				t.Errorf("Parse(good) = %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%s) = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, b := range seedBlobs(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatal("a parsed blob does not marshal back to its input")
		}
	})
}
