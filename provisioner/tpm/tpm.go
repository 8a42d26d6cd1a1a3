// Package tpm is the device's TPM 2.0 identity: it opens a TPM by URI, keeps
// the endorsement key (EK) and storage root key (SRK) persisted with the TCG
// templates, derives the DPS registration ID, reads the EK certificates and
// their chain, activates the keys DPS sends
// (docs/dps-protocol.md#activation-in-the-tpm) or keeps a hub identity set
// by hand (docs/hub-identity.md#in-the-tpm), and signs with the key inside
// the chip. Keys never leave the TPM.
//
// A TPM is safe for concurrent use: its operations are serialized, so a
// command sequence (an activation, an HMAC sequence) is never interleaved
// with another from this process.
package tpm

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/activation"
)

// Well-known persistent handles (docs/dps-protocol.md#ek-and-srk; TCG EK Credential Profile).
const (
	EKHandle             tpm2.TPMHandle = 0x81010001
	SRKHandle            tpm2.TPMHandle = 0x81000001
	DefaultAuthKeyHandle tpm2.TPMHandle = 0x81000100
	// AuthKeyBase is what aziot's auth_key_index is added to.
	AuthKeyBase tpm2.TPMHandle = 0x81000000
)

// Config holds what a TPM needs beyond its transport. The zero value uses
// empty hierarchy passwords and the default auth key handle.
type Config struct {
	// EndorsementAuth is the endorsement hierarchy password, used to create
	// the EK and to satisfy its PolicySecret.
	EndorsementAuth []byte
	// OwnerAuth is the owner (storage) hierarchy password, used to create
	// the SRK and to persist and evict keys.
	OwnerAuth []byte
	// AuthKeyHandle is where the key DPS sends is persisted; zero means
	// DefaultAuthKeyHandle.
	AuthKeyHandle tpm2.TPMHandle
}

// TPM is an open TPM holding a device identity.
type TPM struct {
	mu       sync.Mutex
	t        transport.TPMCloser
	cfg      Config
	maxInput int // TPM_PT_INPUT_BUFFER, read once
	// ekAnchors are trust anchors for the EK certificate besides the
	// manufacturer CAs internal/ekcert embeds; tests set them.
	ekAnchors []*x509.Certificate
}

// Open opens the TPM at uri (see OpenTransport) and, like New, finishes an
// auth key swap that was cut short.
func Open(uri string, cfg Config) (*TPM, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t, err := OpenTransport(uri)
	if err != nil {
		return nil, err
	}
	tp, err := New(t, cfg)
	if err != nil {
		t.Close()
		return nil, err
	}
	return tp, nil
}

// New returns a TPM over an open transport, which it closes on Close. When
// ImportKey was cut short after staging a new key (see StagingIndex), New
// finishes its work, so the auth key slot holds the newest key; the
// transport is not closed when that fails.
func New(t transport.TPMCloser, cfg Config) (*TPM, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tp := &TPM{t: t, cfg: cfg}
	if err := tp.finishSwap(); err != nil {
		return nil, err
	}
	return tp, nil
}

func (c *Config) validate() error {
	if c.AuthKeyHandle == 0 {
		c.AuthKeyHandle = DefaultAuthKeyHandle
	}
	// Owner persistent range, TPM 2.0 Part 2 §7.5 / TCG handle registry.
	if c.AuthKeyHandle < 0x81000000 || c.AuthKeyHandle > 0x817FFFFF {
		return fmt.Errorf("auth key handle %#x is not an owner persistent handle (0x81000000-0x817fffff)", uint32(c.AuthKeyHandle))
	}
	if c.AuthKeyHandle == EKHandle || c.AuthKeyHandle == SRKHandle {
		return fmt.Errorf("auth key handle %#x is taken by the EK or SRK", uint32(c.AuthKeyHandle))
	}
	if StagingIndex(c.AuthKeyHandle)&^0xFFFF == hubRecordBase {
		return fmt.Errorf("auth key handle %#x would stage its keys at NV index %#x, among the hub identity records (%#x-%#x); choose another", uint32(c.AuthKeyHandle), uint32(StagingIndex(c.AuthKeyHandle)), uint32(hubRecordBase), uint32(hubRecordBase|0xFFFF))
	}
	return nil
}

// Close closes the transport.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.t.Close()
}

// Identity is what an operator enrolls in DPS.
type Identity struct {
	// RegistrationID is derived from the EK as the Azure SDKs do.
	RegistrationID string
	// EndorsementKey and StorageRootKey are marshalled TPM2B_PUBLIC areas,
	// size prefix included: the bytes DPS wants, base64-encoded.
	EndorsementKey []byte
	StorageRootKey []byte
	// EKCertificate is the manufacturer's RSA EK certificate, from NV
	// 0x01c00002, nil when the TPM has none. Its public key has been
	// checked to be the EK.
	EKCertificate *x509.Certificate
	// ECCEKCertificate is the ECC P-256 EK certificate, from NV
	// 0x01c0000a, nil when the TPM has none. It certifies the ECC EK,
	// which is not used here, so it is only parsed.
	ECCEKCertificate *x509.Certificate
	// EKCertificateChain holds the certificates of the EK certificate
	// chain indices 0x01c00100-0x01c001ff, in index order: intermediates
	// the manufacturer stored, unverified.
	EKCertificateChain []*x509.Certificate
	// CertificateErrors are *CertificateError: certificates found in NV
	// and left out above because they are malformed or certify another
	// key.
	CertificateErrors []error
}

// Identity makes sure the EK and SRK are persisted, creating them when
// missing, and returns the device identity.
func (t *TPM) Identity(ctx context.Context) (*Identity, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ek, err := t.ensureEK()
	if err != nil {
		return nil, err
	}
	srk, err := t.ensureSRK()
	if err != nil {
		return nil, err
	}
	ekBytes := tpm2.Marshal(ek.pub)
	id := &Identity{
		RegistrationID: RegistrationID(ekBytes),
		EndorsementKey: ekBytes,
		StorageRootKey: tpm2.Marshal(srk.pub),
	}
	if err := t.ekCredentials(ek, id); err != nil {
		return nil, err
	}
	return id, nil
}

// RegistrationID derives the DPS registration ID from a marshalled EK
// TPM2B_PUBLIC: lowercase RFC 4648 base32 of its SHA-256, without padding
// (docs/dps-protocol.md#registration-id; C prov_auth_client.c, Node tpm.ts).
func RegistrationID(ek []byte) string {
	sum := sha256.Sum256(ek)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
}

// key is a loaded or persisted object.
type key struct {
	handle tpm2.TPMHandle
	pub    tpm2.TPM2BPublic
	name   tpm2.TPM2BName
	priv   tpm2.TPM2BPrivate // wrapped by the SRK; set for an imported key
}

func (k *key) named() tpm2.NamedHandle { return tpm2.NamedHandle{Handle: k.handle, Name: k.name} }

func (t *TPM) ensureEK() (*key, error) {
	return t.ensurePersistent("endorsement key", EKHandle, tpm2.TPMRHEndorsement, t.cfg.EndorsementAuth, tpm2.RSAEKTemplate, checkEK)
}

func (t *TPM) ensureSRK() (*key, error) {
	return t.ensurePersistent("storage root key", SRKHandle, tpm2.TPMRHOwner, t.cfg.OwnerAuth, tpm2.RSASRKTemplate, checkSRK)
}

func checkEK(pub *tpm2.TPMTPublic) error {
	if err := activation.CheckStorageKey(pub); err != nil {
		return err
	}
	if string(pub.AuthPolicy.Buffer) != string(activation.EKPolicy()) {
		return fmt.Errorf("%w: authPolicy is not the TCG EK policy PolicySecret(TPM_RH_ENDORSEMENT)", activation.ErrKey)
	}
	return nil
}

func checkSRK(pub *tpm2.TPMTPublic) error {
	if err := activation.CheckStorageKey(pub); err != nil {
		return err
	}
	if !pub.ObjectAttributes.UserWithAuth {
		return fmt.Errorf("%w: userWithAuth is clear, so a password cannot authorize it", activation.ErrKey)
	}
	return nil
}

// ensurePersistent reads the object at h and checks its kind; when nothing
// is there, it creates the primary key from template and persists it. An
// existing object is never replaced.
func (t *TPM) ensurePersistent(what string, h, hierarchy tpm2.TPMHandle, auth []byte, template tpm2.TPMTPublic, check func(*tpm2.TPMTPublic) error) (*key, error) {
	k, err := t.readPersistent(h)
	if err == nil {
		pub, err := k.pub.Contents()
		if err != nil {
			return nil, fmt.Errorf("%s at %#x: %w", what, uint32(h), err)
		}
		if err := check(pub); err != nil {
			return nil, fmt.Errorf("%s at %#x is not the expected kind (%w); it was left as it is: evict it (tpm2_evictcontrol -c %#x) only if nothing else uses it", what, uint32(h), err, uint32(h))
		}
		return k, nil
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("read %s at %#x: %w", what, uint32(h), explain(err, ""))
	}
	hierarchyName := "endorsement"
	if hierarchy == tpm2.TPMRHOwner {
		hierarchyName = "owner"
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(auth)},
		InPublic:      tpm2.New2B(template),
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", what, explain(err, hierarchyName))
	}
	defer t.flush(cp.ObjectHandle)
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)},
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: h,
	}).Execute(t.t); err != nil {
		return nil, fmt.Errorf("persist %s at %#x: %w", what, uint32(h), explain(err, "owner"))
	}
	return &key{handle: h, pub: cp.OutPublic, name: cp.Name}, nil
}

func (t *TPM) readPersistent(h tpm2.TPMHandle) (*key, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t.t)
	if err != nil {
		return nil, err
	}
	return &key{handle: h, pub: rp.OutPublic, name: rp.Name}, nil
}

// flush releases a transient object or session; it runs on every path, and
// a failure here cannot be acted on by the caller. A command lost on the
// way is sent once more: without a resource manager (swtpm, a simulator)
// nothing else would ever flush the handle. When the first one did run,
// the second is refused with TPM_RC_HANDLE, which is harmless.
func (t *TPM) flush(h tpm2.TPMHandle) {
	_, err := tpm2.FlushContext{FlushHandle: h}.Execute(t.t)
	var rc tpm2.TPMRC
	var fmt1 tpm2.TPMFmt1Error
	if err != nil && !errors.As(err, &rc) && !errors.As(err, &fmt1) {
		_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t.t)
	}
}
