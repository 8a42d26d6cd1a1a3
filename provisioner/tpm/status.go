package tpm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Status is what is persisted in the TPM, read without changing anything.
type Status struct {
	Manufacturer string `json:"manufacturer"` // e.g. "IFX", "STM", "IBM" for the simulators
	// Persisted objects at their handles.
	EndorsementKey bool   `json:"endorsementKey"`
	StorageRootKey bool   `json:"storageRootKey"`
	AuthKey        bool   `json:"authKey"`
	AuthKeyHandle  uint32 `json:"authKeyHandle"`
}

// Status reports which identity objects are persisted. Unlike Identity it
// never creates one.
func (t *TPM) Status(ctx context.Context) (*Status, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := t.property(tpm2.TPMPTManufacturer)
	if err != nil {
		return nil, err
	}
	s := &Status{Manufacturer: manufacturer(m), AuthKeyHandle: uint32(t.cfg.AuthKeyHandle)}
	for _, o := range []struct {
		h   tpm2.TPMHandle
		set *bool
	}{{EKHandle, &s.EndorsementKey}, {SRKHandle, &s.StorageRootKey}, {t.cfg.AuthKeyHandle, &s.AuthKey}} {
		_, err := t.readPersistent(o.h)
		switch {
		case err == nil:
			*o.set = true
		case !errors.Is(err, tpm2.TPMRCHandle):
			return nil, fmt.Errorf("read %#x: %w", uint32(o.h), err)
		}
	}
	return s, nil
}

// manufacturer decodes TPM_PT_MANUFACTURER, four ASCII characters.
func manufacturer(v uint32) string {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return strings.TrimRight(string(b), "\x00 ")
}

// CheckAuthorization proves the configured endorsement and owner passwords
// by creating a small ECC primary key in each hierarchy and flushing it:
// nothing persists. Wrong passwords give ErrAuthorization (and count
// towards the dictionary-attack lockout, like any wrong password).
func (t *TPM) CheckAuthorization(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range []struct {
		name   string
		handle tpm2.TPMHandle
		auth   []byte
	}{{"endorsement", tpm2.TPMRHEndorsement, t.cfg.EndorsementAuth}, {"owner", tpm2.TPMRHOwner, t.cfg.OwnerAuth}} {
		if err := ctx.Err(); err != nil {
			return err
		}
		cp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: h.handle, Auth: tpm2.PasswordAuth(h.auth)},
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}.Execute(t.t)
		if err != nil {
			return fmt.Errorf("use the %s hierarchy: %w", h.name, explain(err, h.name))
		}
		t.flush(cp.ObjectHandle)
	}
	return nil
}
