package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The hub identity record of an auth key handle, at HubRecordIndex of that
// handle (docs/hub-identity.md#in-the-tpm): an 8-byte magic with the format
// version, the auth key handle (4 bytes, big-endian), then two entries of
// hubEntrySize bytes. An entry is the SHA-256 digest of the name of the
// key it belongs to (all zeros: empty), the host name (length byte, then
// maxHostName bytes) and the device ID (length byte, then maxDeviceID
// bytes), zero-padded. Two entries let SetHubIdentity write the new
// identity next to the current one before the key swap: whichever key the
// slot holds after a failure, the record has its entry. Entries are
// written whole by one TPM2_NV_Write each (416 bytes, under every TPM's
// TPM_PT_NV_BUFFER_MAX), and the index size never changes, so it is never
// undefined to be rewritten.
const (
	hubMagic      = "EDGEHUB\x02"
	hubHeaderSize = len(hubMagic) + 4
	hubEntrySize  = sha256.Size + 1 + maxHostName + 1 + maxDeviceID + 1 // padded to 416
	hubRecordSize = hubHeaderSize + 2*hubEntrySize
)

// HubRecordIndex is the owner NV index that holds the hub identity record
// of the auth key handle authKey: one of the 64 Ki indices
// 0x013F0000-0x013FFFFF, at the top of the owner range 0x01000000-0x013FFFFF
// of the TCG Registry of Reserved TPM 2.0 Handles and Localities (v1.1
// §2.2), away from the low indices tools and examples use. The index is
// 0x013F0000 plus (authKey - AuthKeyBase + 0xFE00) modulo 0x10000, so the
// default auth key handle has HubIdentityIndex. The staging indices of auth
// key handles 0x813F0000-0x813FFFFF and 0x817F0000-0x817FFFFF fall in that
// range; Config refuses them. Auth key handles 64 Ki apart share an index;
// the record names its handle, and one for another handle is left alone.
func HubRecordIndex(authKey tpm2.TPMHandle) tpm2.TPMHandle {
	return hubRecordBase | (authKey-AuthKeyBase+0xFE00)&0xFFFF
}

const hubRecordBase tpm2.TPMHandle = 0x013F0000

// hubAttributes: anyone may read the record with the index's empty
// password (the relay and token run without owner rights); only the owner
// may write or undefine it; with an empty owner password, the usual one,
// that is anyone with access to the TPM. noDA: reading with an empty
// password never counts towards the dictionary-attack lockout.
var hubAttributes = tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary}

type hubEntry struct {
	key [sha256.Size]byte // digest of the key's name; zero: empty
	id  HubIdentity
}

type hubRecord struct {
	idx     tpm2.TPMHandle // HubRecordIndex of the auth key handle
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

func hubPublic(idx tpm2.TPMHandle) tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256, Attributes: hubAttributes, DataSize: uint16(hubRecordSize)}
}

// readHubRecord reads the record of the auth key handle. An index there
// that is not ours, or holds the record of another auth key handle, is an
// error: it is left alone.
func (t *TPM) readHubRecord() (*hubRecord, error) {
	h := t.cfg.AuthKeyHandle
	idx := HubRecordIndex(h)
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return &hubRecord{idx: idx}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the hub identity record at NV index %#x: %w", uint32(idx), err)
	}
	pub, err := rp.NVPublic.Contents()
	want := hubPublic(idx)
	if err != nil || pub.NameAlg != want.NameAlg || pub.DataSize != want.DataSize || len(pub.AuthPolicy.Buffer) != 0 || !sameNVAttributes(pub.Attributes, want.Attributes) {
		return nil, fmt.Errorf("%w: NV index %#x holds something other than a hub identity record; it was left as it is: undefine it (tpm2_nvundefine %#x) only if nothing else uses it", errForeignRecord, uint32(idx), uint32(idx))
	}
	r := &hubRecord{idx: idx, nv: tpm2.NamedHandle{Handle: idx, Name: rp.NVName}, defined: true, written: pub.Attributes.Written}
	if !r.written {
		return r, nil
	}
	auth := tpm2.AuthHandle{Handle: idx, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	var data []byte
	// Two reads of half the record each, under every TPM's NV buffer.
	for off := 0; off < hubRecordSize; off += hubRecordSize / 2 {
		rd, err := tpm2.NVRead{AuthHandle: auth, NVIndex: r.nv, Size: uint16(hubRecordSize / 2), Offset: uint16(off)}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("read the hub identity record at NV index %#x: %w", uint32(idx), err)
		}
		data = append(data, rd.Data.Buffer...)
	}
	if !bytes.HasPrefix(data, []byte(hubMagic)) || len(data) != hubRecordSize {
		return nil, fmt.Errorf("%w: NV index %#x holds something other than a hub identity record (or a later format); it was left as it is", errForeignRecord, uint32(idx))
	}
	if owner := tpm2.TPMHandle(binary.BigEndian.Uint32(data[len(hubMagic):])); owner != h {
		return nil, fmt.Errorf("%w: NV index %#x holds the hub identity record of auth key handle %#x; it was left as it is: choose an auth key handle that is not 64 Ki away from another one", errForeignRecord, uint32(idx), uint32(owner))
	}
	for i := range r.entries {
		r.entries[i], _ = parseHubEntry(data[hubHeaderSize+i*hubEntrySize:][:hubEntrySize])
	}
	return r, nil
}

// errForeignRecord: the hub record index of the auth key handle holds
// something that is not this handle's record.
var errForeignRecord = errors.New("not this auth key handle's hub identity record")

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
// first when there is none. A fresh record gets its header first, the
// magic and the auth key handle, then the other entry empty, then entry i.
func (t *TPM) writeHubEntry(r *hubRecord, i int, e hubEntry) error {
	if !r.defined {
		pub := hubPublic(r.idx)
		name, err := tpm2.NVName(&pub)
		if err != nil {
			return err
		}
		if _, err := (tpm2.NVDefineSpace{AuthHandle: t.owner(), PublicInfo: tpm2.New2B(pub)}).Execute(t.t); err != nil {
			return fmt.Errorf("define the hub identity record at NV index %#x: %w", uint32(r.idx), explain(err, "owner"))
		}
		r.nv, r.defined = tpm2.NamedHandle{Handle: r.idx, Name: *name}, true
	}
	write := func(off int, data []byte) error {
		if _, err := (tpm2.NVWrite{AuthHandle: t.owner(), NVIndex: r.nv, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}, Offset: uint16(off)}).Execute(t.t); err != nil {
			return fmt.Errorf("write the hub identity record at NV index %#x: %w", uint32(r.idx), explain(err, "owner"))
		}
		return nil
	}
	if !r.written {
		hdr := binary.BigEndian.AppendUint32([]byte(hubMagic), uint32(t.cfg.AuthKeyHandle))
		if err := write(0, hdr); err != nil {
			return err
		}
		r.written = true
		if err := write(hubHeaderSize+(1-i)*hubEntrySize, hubEntry{}.marshal()); err != nil {
			return err
		}
		r.entries[1-i] = hubEntry{}
	}
	if err := write(hubHeaderSize+i*hubEntrySize, e.marshal()); err != nil {
		return err
	}
	r.entries[i] = e
	return nil
}
