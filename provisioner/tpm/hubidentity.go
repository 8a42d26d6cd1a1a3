package tpm

import (
	"context"
	"errors"

	"github.com/google/go-tpm/tpm2"
)

// HubIdentityIndex is the NV index that holds a hub identity's host name
// and device ID. TODO(identity set): choose in the owner range, cite, document.
const HubIdentityIndex tpm2.TPMHandle = 0x01000100

// Errors of the hub identity.
var (
	// ErrNoHubIdentity: the TPM holds no hub identity record.
	ErrNoHubIdentity = errors.New("the TPM holds no hub identity")
	// ErrReplacesDPS: the auth key slot holds a key DPS provisioned; only
	// force replaces it.
	ErrReplacesDPS = errors.New("the TPM's auth key was provisioned by DPS")
)

// HubIdentity is an IoT hub device identity kept in the TPM: the host name
// and device ID in NV at HubIdentityIndex, the primary key at the auth key
// handle.
type HubIdentity struct {
	HostName string
	DeviceID string
}

// SetHubIdentity puts id in NV and key (the device's primary key, decoded)
// in the TPM at the auth key handle, as a keyed-hash key that signs and is
// never read back or duplicated. The previous key keeps working until the
// new one is persisted. It refuses with ErrReplacesDPS to replace a key
// without a hub identity record (one DPS provisioned) unless force.
func (t *TPM) SetHubIdentity(ctx context.Context, id HubIdentity, key []byte, force bool) error {
	return errors.New("tpm: SetHubIdentity not implemented yet")
}

// HubIdentity reads the hub identity record from NV; ErrNoHubIdentity when
// there is none.
func (t *TPM) HubIdentity(ctx context.Context) (*HubIdentity, error) {
	return nil, errors.New("tpm: HubIdentity not implemented yet")
}

// ClearHubIdentity evicts the key at the auth key handle and undefines the
// hub identity record.
func (t *TPM) ClearHubIdentity(ctx context.Context) error {
	return errors.New("tpm: ClearHubIdentity not implemented yet")
}
