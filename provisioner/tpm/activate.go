package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/activation"
)

// ErrActivation reports a blob the TPM refused: made for another TPM, or
// corrupted on the way. The previous auth key is untouched.
var ErrActivation = errors.New("TPM refused the activation blob")

// ImportKey activates an activation blob from DPS (docs/dps-protocol.md#activation-in-the-tpm) and
// persists the HMAC key it carries at the auth key handle. The previous key
// is evicted only once the new one is loaded, so a bad blob leaves it usable.
func (t *TPM) ImportKey(ctx context.Context, blob []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	k, err := t.activate(blob)
	if err != nil {
		return err
	}
	defer t.flush(k.handle)
	return t.persist(k)
}

// SignChallenge activates the challenge blob of DPS's first answer and
// returns HMAC-SHA256(challengeKey, data) without persisting the key: the
// key is loaded, used once and flushed. The Azure SDKs persist the challenge
// key at the auth key handle; keeping it transient means a registration that
// fails later (disabled, refused, timed out) leaves the previous key usable.
func (t *TPM) SignChallenge(ctx context.Context, blob, data []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k, err := t.activate(blob)
	if err != nil {
		return nil, err
	}
	defer t.flush(k.handle)
	return t.hmac(k, data)
}

// activate runs ActivateCredential and Import for a blob and loads the key
// under the SRK. The caller holds t.mu and flushes the returned handle.
func (t *TPM) activate(blob []byte) (*key, error) {
	b, err := activation.Parse(blob)
	if err != nil {
		return nil, err
	}
	ek, err := t.readPersistent(EKHandle)
	if err != nil {
		return nil, fmt.Errorf("read endorsement key at %#x (run identity first): %w", uint32(EKHandle), err)
	}
	srk, err := t.readPersistent(SRKHandle)
	if err != nil {
		return nil, fmt.Errorf("read storage root key at %#x (run identity first): %w", uint32(SRKHandle), err)
	}
	// The SRK has an empty authValue and userWithAuth; the owner password
	// is not involved.
	srkAuth := tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)}

	// The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT); go-tpm starts the
	// policy session just in time and flushes it after use or failure.
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: srkAuth,
		KeyHandle: tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16,
			func(tp transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
				_, err := tpm2.PolicySecret{
					AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(t.cfg.EndorsementAuth)},
					PolicySession: s,
					NonceTPM:      nonce,
				}.Execute(tp)
				return err
			})},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: b.CredentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: b.Secret},
	}.Execute(t.t)
	if err != nil {
		if e := explain(err, "endorsement"); e != err {
			return nil, fmt.Errorf("activate credential: %w", e)
		}
		return nil, fmt.Errorf("%w: ActivateCredential: the blob was not made for this TPM's EK and SRK, or is corrupt: %w", ErrActivation, err)
	}
	inner := ac.CertInfo.Buffer
	pub := tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public)
	imp, err := tpm2.Import{
		ParentHandle:  srkAuth,
		EncryptionKey: tpm2.TPM2BData{Buffer: inner},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: b.Duplicate},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: b.InSymSeed},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(len(inner)*8)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("%w: Import: %w", ErrActivation, err)
	}
	ld, err := tpm2.Load{ParentHandle: srkAuth, InPrivate: imp.OutPrivate, InPublic: pub}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("%w: Load: %w", ErrActivation, err)
	}
	return &key{handle: ld.ObjectHandle, name: ld.Name, pub: pub}, nil
}

// persist makes the loaded key k the auth key, replacing the previous one.
func (t *TPM) persist(k *key) error {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)}
	h := t.cfg.AuthKeyHandle
	old, err := t.readPersistent(h)
	switch {
	case err == nil:
		if p, err := old.pub.Contents(); err != nil || p.Type != tpm2.TPMAlgKeyedHash {
			return fmt.Errorf("the object at auth key handle %#x is not an HMAC key; it was left as it is: choose another auth key index or evict it", uint32(h))
		}
		if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: old.named(), PersistentHandle: h}).Execute(t.t); err != nil {
			return fmt.Errorf("evict the previous key at %#x: %w", uint32(h), explain(err, "owner"))
		}
	case !errors.Is(err, tpm2.TPMRCHandle):
		return fmt.Errorf("read auth key handle %#x: %w", uint32(h), err)
	}
	if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: k.named(), PersistentHandle: h}).Execute(t.t); err != nil {
		return fmt.Errorf("persist the new key at %#x: %w", uint32(h), explain(err, "owner"))
	}
	return nil
}
