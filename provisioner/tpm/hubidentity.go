package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgetpm/edgetpm/internal/sas"
)

// HubIdentityIndex is the NV index that holds the hub identity record of
// the default auth key handle: HubRecordIndex(DefaultAuthKeyHandle)
// (docs/hub-identity.md#in-the-tpm).
const HubIdentityIndex tpm2.TPMHandle = 0x013FFF00

// Errors of the hub identity.
var (
	// ErrNoHubIdentity: the TPM holds no hub identity record for the key at
	// the auth key handle.
	ErrNoHubIdentity = errors.New("the TPM holds no hub identity")
	// ErrReplacesDPS: the auth key slot holds a key DPS provisioned; only
	// force replaces it.
	ErrReplacesDPS = errors.New("the TPM's auth key was provisioned by DPS")
	// ErrHubIdentity: the host name, device ID or key given to
	// SetHubIdentity is malformed. The TPM was not touched.
	ErrHubIdentity = errors.New("invalid hub identity")
)

// HubIdentity is an IoT hub device identity kept in the TPM: the host name
// and device ID in NV at HubIdentityIndex, the primary key at the auth key
// handle.
type HubIdentity struct {
	HostName string
	DeviceID string
}

// Limits of a hub identity. IoT Hub device IDs are at most 128 ASCII
// characters from a fixed set (sas.ValidID), and its registry takes
// symmetric keys of 16 to 64 bytes (docs/hub-identity.md#in-the-tpm). A
// host name is a DNS name, at most 253 characters.
const (
	maxHostName = 253
	maxDeviceID = 128
	minHubKey   = 16
	maxHubKey   = 64
)

// Validate checks id's host name (an IoT hub's, sas.CheckHubHostName) and
// device ID (sas.ValidID): the rules provisioner/hubcred and the relay
// check. Errors wrap ErrHubIdentity.
func (id HubIdentity) Validate() error {
	if err := sas.CheckHubHostName(id.HostName); err != nil {
		return fmt.Errorf("%w: host name %q: %w", ErrHubIdentity, id.HostName, err)
	}
	if !sas.ValidID(id.DeviceID) {
		return fmt.Errorf("%w: device ID %q: want 1 to %d ASCII letters, digits or - : . + %% _ # * ? ! ( ) , = @ ; $ '", ErrHubIdentity, id.DeviceID, maxDeviceID)
	}
	return nil
}

// SetHubIdentity puts id in NV and primaryKey (the device's primary key,
// base64-decoded) in the TPM at the auth key handle, as a keyed-hash key
// that signs and is never read back or duplicated. The previous key keeps
// working until the new one is persisted, through the same staged swap as
// ImportKey. It refuses with ErrReplacesDPS to replace a key without a hub
// identity record (one DPS provisioned) unless force.
//
// The key crosses the TPM bus only encrypted: TPM2_Create runs in a salted
// session with parameter encryption (createHubKey). SetHubIdentity makes
// no copy of primaryKey; the caller owns it and zeroes it. Zeroing is
// best-effort: go-tpm's command buffers hold copies that only the garbage
// collector reclaims. Errors never hold key bytes. Malformed input gives
// ErrHubIdentity before any TPM command.
func (t *TPM) SetHubIdentity(ctx context.Context, id HubIdentity, primaryKey []byte, force bool) error {
	if err := id.Validate(); err != nil {
		return err
	}
	if len(primaryKey) < minHubKey || len(primaryKey) > maxHubKey {
		return fmt.Errorf("%w: the key is %d bytes, want %d to %d (the portal's primary key, base64-decoded)", ErrHubIdentity, len(primaryKey), minHubKey, maxHubKey)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	var nk *key
	defer func() {
		if nk != nil {
			t.flush(nk.handle)
		}
	}()
	return t.persist(func(cur *key) (*key, error) {
		rec, err := t.readHubRecord()
		if err != nil {
			return nil, err
		}
		slot := -1
		if cur != nil {
			slot = rec.match(cur.name)
			if slot < 0 && !force {
				return nil, fmt.Errorf("%w: auth key handle %#x holds a key without a hub identity; replace it with force", ErrReplacesDPS, uint32(t.cfg.AuthKeyHandle))
			}
		}
		srk, err := t.readPersistent(SRKHandle)
		if err != nil {
			return nil, fmt.Errorf("read storage root key at %#x (run identity first): %w", uint32(SRKHandle), err)
		}
		if nk, err = t.createHubKey(srk, primaryKey); err != nil {
			return nil, err
		}
		// The record first, in the entry the current key does not use:
		// from here on the record names both keys, so whichever the slot
		// holds after a failure or a crash (persist leaves the old or the
		// new one) has its host name and device ID.
		if err := t.writeHubEntry(rec, 1-max(slot, 0), hubEntry{key: keyDigest(nk.name), id: id}); err != nil {
			return nil, err
		}
		return nk, nil
	})
}

// hubKeyTemplate is the public area of a hub identity key. Like the key
// DPS sends (internal/activation), it is an HMAC-SHA256 signing key with
// an empty authValue, userWithAuth and noDA: Sign, the Azure SDKs and
// aziot's TPM code authorize the auth key with an empty password, and
// holding the TPM (root or the tss group) is what guards it, as for the
// DPS key. Unlike the DPS key, which Import requires to have them clear,
// fixedTPM and fixedParent are set: the key can never be duplicated
// (TPM 2.0 Part 1 §23.3, Part 3 TPM2_Duplicate). sensitiveDataOrigin is
// clear because the key is given (Part 3 TPM2_Create); decrypt and
// restricted are clear: it only signs.
var hubKeyTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgKeyedHash,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:     true,
		FixedParent:  true,
		UserWithAuth: true,
		NoDA:         true,
		SignEncrypt:  true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
		Scheme: tpm2.TPMTKeyedHashScheme{
			Scheme:  tpm2.TPMAlgHMAC,
			Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
		},
	}),
}

// createHubKey creates the hub key under the SRK with k as its sensitive
// data and loads it. An object brought in with TPM2_Import must have
// fixedTPM and fixedParent clear (Part 3 TPM2_Import), so the key is
// created instead; the command's first parameter, the TPM2B_SENSITIVE_CREATE
// holding k, is AES-128-CFB encrypted with a key from a session salted to
// saltKey's public key (Part 1 §21 parameter encryption): someone who only
// listens on the bus cannot read it, and someone who alters the TPM's
// answers can only when no EK certificate authenticates the salt key
// (docs/hub-identity.md#in-the-tpm). The caller holds t.mu and flushes the
// key.
func (t *TPM) createHubKey(srk *key, k []byte) (*key, error) {
	salt, _, err := t.saltKey()
	if err != nil {
		return nil, err
	}
	saltPub, err := salt.pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("salt key: %w", err)
	}
	sess, _, err := tpm2.HMACSession(t.t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(salt.handle, *saltPub), tpm2.AESEncryption(128, tpm2.EncryptIn))
	if err != nil {
		return nil, fmt.Errorf("start a session salted with the key at %#x: %w", uint32(salt.handle), err)
	}
	defer t.flush(sess.Handle())
	cr, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: sess},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: k}),
		}},
		InPublic: tpm2.New2B(hubKeyTemplate),
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("create the hub key under the storage root key: %w", err)
	}
	ld, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    cr.OutPrivate,
		InPublic:     cr.OutPublic,
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("load the hub key: %w", err)
	}
	return &key{handle: ld.ObjectHandle, name: ld.Name, pub: cr.OutPublic, priv: cr.OutPrivate}, nil
}

// HubIdentity reads the hub identity record from NV; ErrNoHubIdentity when
// there is none, or none for the key at the auth key handle.
func (t *TPM) HubIdentity(ctx context.Context) (*HubIdentity, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rec, err := t.readHubRecord()
	if err != nil {
		return nil, err
	}
	if !rec.written {
		return nil, ErrNoHubIdentity
	}
	h := t.cfg.AuthKeyHandle
	cur, err := t.readPersistent(h)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("%w: no key at auth key handle %#x", ErrNoHubIdentity, uint32(h))
	}
	if err != nil {
		return nil, fmt.Errorf("read auth key handle %#x: %w", uint32(h), err)
	}
	i := rec.match(cur.name)
	if i < 0 {
		return nil, fmt.Errorf("%w for the key at auth key handle %#x", ErrNoHubIdentity, uint32(h))
	}
	id := rec.entries[i].id
	return &id, nil
}

// ClearHubIdentity evicts the key at the auth key handle and undefines the
// hub identity record. A key the record does not name (one DPS
// provisioned) is left in place; ErrNoHubIdentity when there is no record.
// The key goes first: a crash in between leaves a record that names no key,
// which readers ignore and SetHubIdentity overwrites.
func (t *TPM) ClearHubIdentity(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := t.finishSwap(); err != nil {
		return err
	}
	rec, err := t.readHubRecord()
	if err != nil {
		return err
	}
	if !rec.defined {
		return ErrNoHubIdentity
	}
	h := t.cfg.AuthKeyHandle
	cur, err := t.readPersistent(h)
	switch {
	case err == nil && rec.match(cur.name) >= 0:
		if _, err := (tpm2.EvictControl{Auth: t.owner(), ObjectHandle: cur.named(), PersistentHandle: h}).Execute(t.t); err != nil {
			return fmt.Errorf("evict the hub key at %#x: %w", uint32(h), explain(err, "owner"))
		}
	case err == nil, errors.Is(err, tpm2.TPMRCHandle):
	default:
		return fmt.Errorf("read auth key handle %#x: %w", uint32(h), err)
	}
	return t.undefineHubRecord(rec)
}

// dropHubRecord undefines the auth key handle's hub identity record, if
// there is one of ours: after DPS provisioned a key, the record names a
// key that is gone. It reports nothing: a record it could not drop names
// no key, and readers ignore it.
func (t *TPM) dropHubRecord() {
	rec, err := t.readHubRecord()
	if err != nil || !rec.defined {
		return
	}
	_ = t.undefineHubRecord(rec)
}

func (t *TPM) undefineHubRecord(rec *hubRecord) error {
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: t.owner(), NVIndex: rec.nv}).Execute(t.t); err != nil {
		return fmt.Errorf("undefine the hub identity record at NV index %#x: %w", uint32(rec.idx), explain(err, "owner"))
	}
	return nil
}
