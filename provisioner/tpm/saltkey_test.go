package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/ekcert"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// interposer sits on the TPM bus as an active attacker: it answers
// TPM2_ReadPublic for the handles in subst with its own RSA key in the
// public area (and, when consistent, the name of that area), and tries to
// decrypt the salt of every TPM2_StartAuthSession with its private key.
type interposer struct {
	transport.TPMCloser
	priv       *rsa.PrivateKey
	subst      []tpm2.TPMHandle
	consistent bool

	mu      sync.Mutex
	learned int // salts the attacker decrypted
	creates int
}

func (p *interposer) Send(cmd []byte) ([]byte, error) {
	switch commandCode(cmd) {
	case tpm2.TPMCCStartAuthSession:
		// Header, tpmKey and bind handles, then nonceCaller and
		// encryptedSalt (Part 3 TPM2_StartAuthSession).
		rest := cmd[10+8:]
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2+n:]
		salt := rest[2 : 2+int(binary.BigEndian.Uint16(rest))]
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, p.priv, salt, []byte("SECRET\x00")); err == nil {
			p.mu.Lock()
			p.learned++
			p.mu.Unlock()
		}
	case tpm2.TPMCCCreate:
		p.mu.Lock()
		p.creates++
		p.mu.Unlock()
	}
	rsp, err := p.TPMCloser.Send(cmd)
	if err != nil || commandCode(cmd) != tpm2.TPMCCReadPublic || len(rsp) < 12 || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
		return rsp, err
	}
	h := tpm2.TPMHandle(binary.BigEndian.Uint32(cmd[10:14]))
	for _, s := range p.subst {
		if s == h {
			return p.substitute(rsp), nil
		}
	}
	return rsp, nil
}

// substitute rewrites a ReadPublic answer: outPublic, name, qualifiedName.
func (p *interposer) substitute(rsp []byte) []byte {
	body := rsp[10:]
	n := int(binary.BigEndian.Uint16(body))
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](body[:2+n])
	if err != nil {
		return rsp
	}
	names := body[2+n:]
	c, err := pub.Contents()
	if err != nil || c.Type != tpm2.TPMAlgRSA {
		return rsp
	}
	c.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: p.priv.N.Bytes()})
	out := tpm2.Marshal(tpm2.New2B(*c))
	if p.consistent {
		name, err := tpm2.ObjectName(c)
		if err != nil {
			return rsp
		}
		qn := int(binary.BigEndian.Uint16(names))
		names = append(tpm2.Marshal(*name), names[2+qn:]...)
	}
	out = append(out, names...)
	hdr := bytes.Clone(rsp[:10])
	binary.BigEndian.PutUint32(hdr[2:6], uint32(10+len(out)))
	return append(hdr, out...)
}

func (p *interposer) counts() (learned, creates int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.learned, p.creates
}

// setThroughInterposer runs Identity, then SetHubIdentity with the
// interposer substituting the keys at subst.
func setThroughInterposer(t *testing.T, uri string, subst []tpm2.TPMHandle, consistent bool) (*interposer, error) {
	t.Helper()
	tr, err := OpenTransport(uri)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &interposer{TPMCloser: tr, priv: priv}
	tp, err := New(p, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.Identity(t.Context()); err != nil {
		t.Fatal(err)
	}
	p.subst, p.consistent = subst, consistent
	return p, tp.SetHubIdentity(t.Context(), hubA, randBytes(t, 32), false)
}

// An interposer that substitutes its own key for the key that salts the
// session carrying the hub key never learns the salt: a public area that
// does not have the name the TPM gave it is refused.
func TestSaltKeySubstituted(t *testing.T) {
	for _, h := range []tpm2.TPMHandle{EKHandle, SRKHandle} {
		t.Run(handleName(h), func(t *testing.T) {
			tpmtest.Each(t, func(t *testing.T, uri string) {
				p, err := setThroughInterposer(t, uri, []tpm2.TPMHandle{h}, false)
				if !errors.Is(err, errSubstituted) {
					t.Errorf("SetHubIdentity through the interposer: %v, want %v", err, errSubstituted)
				}
				if learned, creates := p.counts(); learned != 0 || creates != 0 {
					t.Errorf("the interposer decrypted %d salts and saw %d TPM2_Create", learned, creates)
				}
			})
		})
	}
}

// With an EK certificate in NV, the EK salts the session: an interposer
// that substitutes the EK's public area and its name consistently is
// caught by the certificate, which certifies another key.
func TestSaltKeyCertified(t *testing.T) {
	sw := tpmtest.StartSwtpmWithEKCert(t)
	p, err := setThroughInterposer(t, sw.URI, []tpm2.TPMHandle{EKHandle, SRKHandle}, true)
	if !errors.Is(err, errSubstituted) {
		t.Errorf("SetHubIdentity through the interposer: %v, want %v", err, errSubstituted)
	}
	if learned, creates := p.counts(); learned != 0 || creates != 0 {
		t.Errorf("the interposer decrypted %d salts and saw %d TPM2_Create", learned, creates)
	}

	// Without the interposer, the EK salts the session.
	tp := open(t, sw.URI, Config{})
	tp.mu.Lock()
	k, trust, err := tp.saltKey()
	tp.mu.Unlock()
	if err != nil || k.handle != EKHandle || trust != saltCertified {
		t.Fatalf("saltKey: %v, %d, %v; want the EK, certified", k, trust, err)
	}
	if err := tp.SetHubIdentity(t.Context(), hubA, randBytes(t, 32), false); err != nil {
		t.Fatal(err)
	}

	// With the harness's CA as a trust anchor, as a manufacturer's root
	// embedded in internal/ekcert, the certificate is verified.
	roots, err := ekcert.ParsePEM(append(append([]byte{}, sw.RootCA...), sw.IssuerCA...))
	if err != nil {
		t.Fatal(err)
	}
	tp.ekAnchors = roots
	tp.mu.Lock()
	k, trust, err = tp.saltKey()
	tp.mu.Unlock()
	if err != nil || k.handle != EKHandle || trust != saltVerified {
		t.Fatalf("saltKey with the harness's CA: %v, %d, %v; want the EK, verified", k, trust, err)
	}
}

func handleName(h tpm2.TPMHandle) string {
	if h == EKHandle {
		return "EK"
	}
	return "SRK"
}
