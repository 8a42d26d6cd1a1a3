package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Sign returns HMAC-SHA256(authKey, data) computed inside the TPM with the
// key persisted at the auth key handle: one TPM2_HMAC when data fits in
// TPM_PT_INPUT_BUFFER, an HMAC sequence beyond that (docs/dps-protocol.md#hmac-inside-the-tpm).
func (t *TPM) Sign(ctx context.Context, data []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := t.cfg.AuthKeyHandle
	k, err := t.readPersistent(h)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("%w at %#x: register with DPS or set a hub identity (edge-provisioner identity set) first", ErrNoAuthKey, uint32(h))
	}
	if err != nil {
		return nil, fmt.Errorf("read auth key at %#x: %w", uint32(h), err)
	}
	if p, err := k.pub.Contents(); err != nil || p.Type != tpm2.TPMAlgKeyedHash || !p.ObjectAttributes.SignEncrypt {
		return nil, fmt.Errorf("the object at auth key handle %#x is not an HMAC signing key", uint32(h))
	}
	return t.hmac(k, data)
}

// hmac signs data with the loaded or persisted HMAC key k. The caller holds
// t.mu.
func (t *TPM) hmac(k *key, data []byte) ([]byte, error) {
	if t.maxInput == 0 {
		n, err := t.property(tpm2.TPMPTInputBuffer)
		if err != nil {
			return nil, err
		}
		t.maxInput = int(n)
	}
	keyAuth := tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)}
	if len(data) <= t.maxInput {
		rsp, err := tpm2.Hmac{Handle: keyAuth, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("TPM2_HMAC: %w", err)
		}
		return rsp.OutHMAC.Buffer, nil
	}
	return t.hmacSequence(keyAuth, data)
}

func (t *TPM) hmacSequence(keyAuth tpm2.AuthHandle, data []byte) (_ []byte, err error) {
	start, err := tpm2.HmacStart{Handle: keyAuth, HashAlg: tpm2.TPMAlgSHA256}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("TPM2_HMAC_Start: %w", err)
	}
	seq := tpm2.AuthHandle{Handle: start.SequenceHandle, Auth: tpm2.PasswordAuth(nil)}
	// SequenceComplete flushes the sequence; any earlier failure must.
	defer func() {
		if err != nil {
			t.flush(start.SequenceHandle)
		}
	}()
	for len(data) > t.maxInput {
		if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data[:t.maxInput]}}).Execute(t.t); err != nil {
			return nil, fmt.Errorf("TPM2_SequenceUpdate: %w", err)
		}
		data = data[t.maxInput:]
	}
	rsp, err := tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, Hierarchy: tpm2.TPMRHNull}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("TPM2_SequenceComplete: %w", err)
	}
	return rsp.Result.Buffer, nil
}
