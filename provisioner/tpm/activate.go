package tpm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/activation"
)

// ErrActivation reports a blob the TPM refused: made for another TPM, or
// corrupted on the way. The previous auth key is untouched.
var ErrActivation = errors.New("TPM refused the activation blob")

// ImportKey activates an activation blob from DPS (docs/dps-protocol.md#activation-in-the-tpm) and
// persists the HMAC key it carries at the auth key handle. The auth key slot
// is never left empty, whatever command fails and even if the process dies
// halfway: a bad blob leaves the previous key as it is, and the new key is
// staged in NV (StagingIndex) before the previous one is evicted, so a swap
// cut short is finished by the next Open or ImportKey. When ImportKey fails
// after the new key was staged, the slot holds the old key or the new one.
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
	if err := t.persist(func(*key) (*key, error) { return k, nil }); err != nil {
		return err
	}
	// The key is swapped: the registration succeeded. The auth key
	// handle's hub identity record names the manual key just replaced;
	// one left behind (a crash, a failure to undefine it) names no key,
	// which every reader ignores, as it matches entries against the key
	// at the handle. An index that is not this handle's record is
	// nothing to drop.
	t.dropHubRecord()
	return nil
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

	// The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT). The session is
	// started here and flushed on every path: go-tpm's just-in-time policy
	// sessions are left loaded when the policy command or the transport
	// fails.
	sess, _, err := tpm2.PolicySession(t.t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("start the EK policy session: %w", err)
	}
	defer t.flush(sess.Handle())
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(t.cfg.EndorsementAuth)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(t.t); err != nil {
		return nil, fmt.Errorf("activate credential: %w", explain(err, "endorsement"))
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: srkAuth,
		KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: sess},
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
	return &key{handle: ld.ObjectHandle, name: ld.Name, pub: pub, priv: imp.OutPrivate}, nil
}

// persist makes the loaded key that next returns the auth key, replacing
// the previous one. It first finishes a swap cut short and checks the
// slot; then next gets the key the slot holds (nil when empty) and
// returns the new key, or an error that leaves the slot as it is (next may
// refuse to replace old, or prepare for the swap, as SetHubIdentity writes
// its record). The caller flushes the returned key.
//
// A persistent handle holds one object and a persistent object cannot be
// copied to another handle (TPM 2.0 Part 3 §28.5, EvictControl), so the
// key's loadable form, its public area and its private area wrapped by the
// SRK, is staged in an NV index first: from there it can be loaded and
// persisted again after a crash. Then the swap: evict the old key, persist
// the new one, undefine the staging index.
func (t *TPM) persist(next func(old *key) (*key, error)) error {
	h := t.cfg.AuthKeyHandle
	if err := t.finishSwap(); err != nil {
		return err
	}
	old, err := t.readPersistent(h)
	switch {
	case err == nil:
		if !isHMACKey(old.pub) {
			return fmt.Errorf("the object at auth key handle %#x is not an HMAC key; it was left as it is: choose another auth key index or evict it", uint32(h))
		}
	case errors.Is(err, tpm2.TPMRCHandle):
		old = nil
	default:
		return fmt.Errorf("read auth key handle %#x: %w", uint32(h), err)
	}
	k, err := next(old)
	if err != nil {
		return err
	}
	nv, err := t.stage(k)
	if err != nil {
		return err // the old key is as it was
	}
	err = t.swap(old, k)
	if err == nil {
		_, err = tpm2.NVUndefineSpace{AuthHandle: t.owner(), NVIndex: nv}.Execute(t.t)
		if err != nil {
			err = fmt.Errorf("undefine staging NV index %#x: %w", uint32(nv.Handle), explain(err, "owner"))
		}
	}
	if err != nil {
		// The new key is staged: finish the swap from there, as the
		// next start would.
		if ferr := t.finishSwap(); ferr != nil {
			return fmt.Errorf("%w; the new key stays staged at NV index %#x and replaces the old one at the next start: %w", err, uint32(nv.Handle), ferr)
		}
	}
	return nil
}

func (t *TPM) owner() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)}
}

// swap replaces old (nil when the slot is empty) with the loaded key k at
// the auth key handle.
func (t *TPM) swap(old, k *key) error {
	h := t.cfg.AuthKeyHandle
	if old != nil {
		if _, err := (tpm2.EvictControl{Auth: t.owner(), ObjectHandle: old.named(), PersistentHandle: h}).Execute(t.t); err != nil {
			return fmt.Errorf("evict the previous key at %#x: %w", uint32(h), explain(err, "owner"))
		}
	}
	if _, err := (tpm2.EvictControl{Auth: t.owner(), ObjectHandle: k.named(), PersistentHandle: h}).Execute(t.t); err != nil {
		return fmt.Errorf("persist the new key at %#x: %w", uint32(h), explain(err, "owner"))
	}
	return nil
}

func isHMACKey(pub tpm2.TPM2BPublic) bool {
	p, err := pub.Contents()
	return err == nil && p.Type == tpm2.TPMAlgKeyedHash
}

// stagedMagic starts what a staging index holds, then the auth key handle
// (4 bytes), the key's TPM2B_PUBLIC and its TPM2B_PRIVATE.
const stagedMagic = "edgetpm staged auth key 1\x00"

// stagingAttributes: only the owner may write it, so a staged key is as
// well guarded as the auth key slot itself; anyone may read it, as the
// private area is wrapped by this TPM's SRK.
var stagingAttributes = tpm2.TPMANV{OwnerWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary}

func (t *TPM) stagingPublic(size int) tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{NVIndex: StagingIndex(t.cfg.AuthKeyHandle), NameAlg: tpm2.TPMAlgSHA256, Attributes: stagingAttributes, DataSize: uint16(size)}
}

// stage writes k's loadable form to the staging index. On failure it
// undefines the index again, as far as it can.
func (t *TPM) stage(k *key) (tpm2.NamedHandle, error) {
	data := []byte(stagedMagic)
	data = binary.BigEndian.AppendUint32(data, uint32(t.cfg.AuthKeyHandle))
	data = append(data, tpm2.Marshal(k.pub)...)
	data = append(data, tpm2.Marshal(k.priv)...)
	pub := t.stagingPublic(len(data))
	name, err := tpm2.NVName(&pub)
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	nv := tpm2.NamedHandle{Handle: pub.NVIndex, Name: *name}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: t.owner(), PublicInfo: tpm2.New2B(pub)}).Execute(t.t); err != nil {
		if errors.Is(err, tpm2.TPMRCNVDefined) {
			return nv, fmt.Errorf("stage the new key: NV index %#x is taken by something else; it was left as it is", uint32(pub.NVIndex))
		}
		return nv, fmt.Errorf("stage the new key at NV index %#x: %w", uint32(pub.NVIndex), explain(err, "owner"))
	}
	if _, err := (tpm2.NVWrite{AuthHandle: t.owner(), NVIndex: nv, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}}).Execute(t.t); err != nil {
		_, _ = tpm2.NVUndefineSpace{AuthHandle: t.owner(), NVIndex: nv}.Execute(t.t)
		return nv, fmt.Errorf("stage the new key at NV index %#x: %w", uint32(pub.NVIndex), explain(err, "owner"))
	}
	return nv, nil
}

// finishSwap finishes a key swap that was cut short, when the staging
// index holds one of ours. The staged key is always the newer one: it is
// staged only once activated, before the old key is touched, and the slot
// only ever receives the staged key. So whatever the slot holds (nothing,
// the old key, or the staged key already) ends up being the staged key,
// and the staging index is undefined. An index that was defined but never
// written is undefined. An index at that place that is not one of ours is
// left alone.
func (t *TPM) finishSwap() error {
	idx := StagingIndex(t.cfg.AuthKeyHandle)
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read staging NV index %#x: %w", uint32(idx), err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil || pub.Attributes.OwnerWrite != true || pub.Attributes.AuthRead != true || pub.Attributes.PolicyDelete ||
		len(pub.AuthPolicy.Buffer) != 0 || pub.Attributes.NT != tpm2.TPMNTOrdinary || int(pub.DataSize) < len(stagedMagic)+4 {
		return nil // not ours
	}
	nv := tpm2.NamedHandle{Handle: idx, Name: rp.NVName}
	undefine := func() error {
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: t.owner(), NVIndex: nv}).Execute(t.t); err != nil {
			return fmt.Errorf("undefine staging NV index %#x: %w", uint32(idx), explain(err, "owner"))
		}
		return nil
	}
	if !pub.Attributes.Written {
		return undefine()
	}
	rd, err := tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: idx, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}, NVIndex: nv, Size: pub.DataSize}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("read staging NV index %#x: %w", uint32(idx), err)
	}
	staged, ok := parseStaged(rd.Data.Buffer, t.cfg.AuthKeyHandle)
	if !ok {
		return nil // not ours, or another auth key's
	}
	h := t.cfg.AuthKeyHandle
	srk, err := t.readPersistent(SRKHandle)
	if err != nil {
		return fmt.Errorf("finish the auth key swap: read storage root key: %w", err)
	}
	ld, err := tpm2.Load{ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)}, InPrivate: staged.priv, InPublic: staged.pub}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("finish the auth key swap: load the staged key: %w", err)
	}
	k := &key{handle: ld.ObjectHandle, name: ld.Name, pub: staged.pub}
	defer t.flush(k.handle)
	cur, err := t.readPersistent(h)
	switch {
	case err == nil && string(cur.name.Buffer) == string(k.name.Buffer):
		return undefine() // the swap was done
	case err == nil && !isHMACKey(cur.pub):
		return fmt.Errorf("finish the auth key swap: the object at auth key handle %#x is not an HMAC key; it was left as it is", uint32(h))
	case err == nil:
	case errors.Is(err, tpm2.TPMRCHandle):
		cur = nil
	default:
		return fmt.Errorf("read auth key handle %#x: %w", uint32(h), err)
	}
	if err := t.swap(cur, k); err != nil {
		return fmt.Errorf("finish the auth key swap: %w", err)
	}
	return undefine()
}

type stagedKey struct {
	pub  tpm2.TPM2BPublic
	priv tpm2.TPM2BPrivate
}

// parseStaged decodes a staging index's data; ok is false when it is not
// a key staged for authKey.
func parseStaged(data []byte, authKey tpm2.TPMHandle) (k stagedKey, ok bool) {
	rest, found := bytes.CutPrefix(data, []byte(stagedMagic))
	if !found || len(rest) < 4 || tpm2.TPMHandle(binary.BigEndian.Uint32(rest)) != authKey {
		return k, false
	}
	buf := bytes.NewBuffer(rest[4:])
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](next2B(buf))
	if err != nil {
		return k, false
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](next2B(buf))
	if err != nil || buf.Len() != 0 || !isHMACKey(*pub) {
		return k, false
	}
	return stagedKey{pub: *pub, priv: *priv}, true
}

// next2B takes one size-prefixed TPM2B from buf, whole or as much as is
// left.
func next2B(buf *bytes.Buffer) []byte {
	if buf.Len() < 2 {
		return buf.Next(buf.Len())
	}
	n := int(binary.BigEndian.Uint16(buf.Bytes()))
	return buf.Next(2 + n)
}

// StagingIndex is the owner NV index where ImportKey stages the key it is
// about to persist at authKey: the auth key's offset in the owner
// persistent range, folded into the owner NV range 0x01000000-0x013FFFFF.
func StagingIndex(authKey tpm2.TPMHandle) tpm2.TPMHandle {
	return 0x01000000 | (authKey-AuthKeyBase)&0x3FFFFF
}
