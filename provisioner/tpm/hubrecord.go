package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The hub identity record at HubIdentityIndex (docs/hub-identity.md#in-the-tpm):
// an 8-byte magic with the format version, then two entries of
// hubEntrySize bytes. An entry is the SHA-256 digest of the name of the
// key it belongs to (all zeros: empty), the host name (length byte, then
// maxHostName bytes) and the device ID (length byte, then maxDeviceID
// bytes), zero-padded. Two entries let SetHubIdentity write the new
// identity next to the current one before the key swap: whichever key the
// slot holds after a failure, the record has its entry. Entries are
// written whole by one TPM2_NV_Write each (at most 424 bytes, under every
// TPM's TPM_PT_NV_BUFFER_MAX), and the index size never changes, so it is
// never undefined to be rewritten.
const (
	hubMagic      = "EDGEHUB\x01"
	hubEntrySize  = sha256.Size + 1 + maxHostName + 1 + maxDeviceID + 1 // padded to 416
	hubRecordSize = len(hubMagic) + 2*hubEntrySize
)

// hubAttributes: anyone may read the record with the index's empty
// password (the relay and token run without owner rights); only the owner
// may write or undefine it. noDA: reading with an empty password never
// counts towards the dictionary-attack lockout.
var hubAttributes = tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary}

type hubEntry struct {
	key [sha256.Size]byte // digest of the key's name; zero: empty
	id  HubIdentity
}

type hubRecord struct {
	nv      tpm2.NamedHandle
	defined bool // the index is defined and ours
	written bool
	entries [2]hubEntry
}

// keyDigest is what an entry keeps of a key's name: the name is the name
// algorithm followed by a digest; hashing it whole keeps the entry's size
// fixed whatever the algorithm.
func keyDigest(name tpm2.TPM2BName) [sha256.Size]byte {
	return sha256.Sum256(name.Buffer)
}

// match returns the entry that belongs to the key named name, or -1.
func (r *hubRecord) match(name tpm2.TPM2BName) int {
	d := keyDigest(name)
	for i, e := range r.entries {
		if e.key != ([sha256.Size]byte{}) && e.key == d {
			return i
		}
	}
	return -1
}

func hubPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{NVIndex: HubIdentityIndex, NameAlg: tpm2.TPMAlgSHA256, Attributes: hubAttributes, DataSize: uint16(hubRecordSize)}
}

// readHubRecord reads the record at HubIdentityIndex. An index there that
// is not ours is an error: it is left alone.
func (t *TPM) readHubRecord() (*hubRecord, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: HubIdentityIndex}.Execute(t.t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return &hubRecord{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the hub identity record at NV index %#x: %w", uint32(HubIdentityIndex), err)
	}
	pub, err := rp.NVPublic.Contents()
	want := hubPublic()
	if err != nil || pub.NameAlg != want.NameAlg || pub.DataSize != want.DataSize || len(pub.AuthPolicy.Buffer) != 0 || !sameNVAttributes(pub.Attributes, want.Attributes) {
		return nil, fmt.Errorf("NV index %#x holds something other than a hub identity record; it was left as it is: undefine it (tpm2_nvundefine %#x) only if nothing else uses it", uint32(HubIdentityIndex), uint32(HubIdentityIndex))
	}
	r := &hubRecord{nv: tpm2.NamedHandle{Handle: HubIdentityIndex, Name: rp.NVName}, defined: true, written: pub.Attributes.Written}
	if !r.written {
		return r, nil
	}
	auth := tpm2.AuthHandle{Handle: HubIdentityIndex, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	var data []byte
	// Two reads of half the record each, under every TPM's NV buffer.
	for off := 0; off < hubRecordSize; off += hubRecordSize / 2 {
		rd, err := tpm2.NVRead{AuthHandle: auth, NVIndex: r.nv, Size: uint16(hubRecordSize / 2), Offset: uint16(off)}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("read the hub identity record at NV index %#x: %w", uint32(HubIdentityIndex), err)
		}
		data = append(data, rd.Data.Buffer...)
	}
	if !bytes.HasPrefix(data, []byte(hubMagic)) {
		return nil, fmt.Errorf("NV index %#x holds something other than a hub identity record (or a later format); it was left as it is", uint32(HubIdentityIndex))
	}
	for i := range r.entries {
		r.entries[i], _ = parseHubEntry(data[len(hubMagic)+i*hubEntrySize:][:hubEntrySize])
	}
	return r, nil
}

func sameNVAttributes(a, b tpm2.TPMANV) bool {
	a.Written, b.Written = false, false
	return a == b
}

// parseHubEntry decodes one entry; a malformed one is empty (ok false), so
// it names no key.
func parseHubEntry(b []byte) (e hubEntry, ok bool) {
	if len(b) != hubEntrySize {
		return hubEntry{}, false
	}
	copy(e.key[:], b)
	b = b[sha256.Size:]
	host, b := b[1:1+int(b[0])], b[1+maxHostName:]
	dev := b[1 : 1+min(int(b[0]), maxDeviceID)]
	e.id = HubIdentity{HostName: string(host), DeviceID: string(dev)}
	if e.key == ([sha256.Size]byte{}) || e.id.Validate() != nil {
		return hubEntry{}, false
	}
	return e, true
}

func (e hubEntry) marshal() []byte {
	b := make([]byte, 0, hubEntrySize)
	b = append(b, e.key[:]...)
	b = append(b, byte(len(e.id.HostName)))
	b = append(b, e.id.HostName...)
	b = b[:sha256.Size+1+maxHostName]
	b = append(b, byte(len(e.id.DeviceID)))
	b = append(b, e.id.DeviceID...)
	return b[:hubEntrySize]
}

// writeHubEntry writes e as entry i of the record, defining the index
// first when there is none. A fresh record is written as the magic with
// entry i, then the other entry empty.
func (t *TPM) writeHubEntry(r *hubRecord, i int, e hubEntry) error {
	if !r.defined {
		pub := hubPublic()
		name, err := tpm2.NVName(&pub)
		if err != nil {
			return err
		}
		if _, err := (tpm2.NVDefineSpace{AuthHandle: t.owner(), PublicInfo: tpm2.New2B(pub)}).Execute(t.t); err != nil {
			return fmt.Errorf("define the hub identity record at NV index %#x: %w", uint32(HubIdentityIndex), explain(err, "owner"))
		}
		r.nv, r.defined = tpm2.NamedHandle{Handle: HubIdentityIndex, Name: *name}, true
	}
	write := func(off int, data []byte) error {
		if _, err := (tpm2.NVWrite{AuthHandle: t.owner(), NVIndex: r.nv, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}, Offset: uint16(off)}).Execute(t.t); err != nil {
			return fmt.Errorf("write the hub identity record at NV index %#x: %w", uint32(HubIdentityIndex), explain(err, "owner"))
		}
		return nil
	}
	if !r.written {
		if err := write(0, append([]byte(hubMagic), hubEntry{}.marshal()...)); err != nil {
			return err
		}
		r.written = true
		r.entries[0] = hubEntry{}
	}
	if err := write(len(hubMagic)+i*hubEntrySize, e.marshal()); err != nil {
		return err
	}
	r.entries[i] = e
	return nil
}
