package tpm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// recorder keeps every command sent to the TPM and every answer.
type recorder struct {
	transport.TPMCloser
	mu   sync.Mutex
	sent [][]byte
	got  [][]byte
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	rsp, err := r.TPMCloser.Send(cmd)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, bytes.Clone(cmd))
	r.got = append(r.got, bytes.Clone(rsp))
	return rsp, err
}

func (r *recorder) reset() (sent, got [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent, got = r.sent, r.got
	r.sent, r.got = nil, nil
	return sent, got
}

func commandCode(cmd []byte) tpm2.TPMCC { return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) }

// leaks reports whether any of bufs holds key, raw, hex or base64.
func leaks(key []byte, bufs ...[]byte) bool {
	forms := [][]byte{key, []byte(hex.EncodeToString(key)), []byte(strings.ToUpper(hex.EncodeToString(key))), []byte(base64.StdEncoding.EncodeToString(key))}
	for _, b := range bufs {
		for _, f := range forms {
			if bytes.Contains(b, f) {
				return true
			}
		}
	}
	return false
}

// tpmState is what the TPM holds that a failed call must not change.
type tpmState struct {
	persistent, nv []tpm2.TPMHandle
	record         []byte
}

func stateOf(t *testing.T, tp *TPM) tpmState {
	t.Helper()
	var s tpmState
	var err error
	if s.persistent, err = tpmtest.Handles(tp.t, 0x81000000); err != nil {
		t.Fatal(err)
	}
	if s.nv, err = tpmtest.Handles(tp.t, 0x01000000); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(s.nv, HubIdentityIndex) {
		rec, err := tp.readHubRecord()
		if err != nil {
			t.Fatal(err)
		}
		s.record = []byte(fmt.Sprint(rec.entries))
	}
	return s
}

func (s tpmState) equal(o tpmState) bool {
	return slices.Equal(s.persistent, o.persistent) && slices.Equal(s.nv, o.nv) && bytes.Equal(s.record, o.record)
}

var (
	hubA = HubIdentity{HostName: "plant-a.azure-devices.net", DeviceID: "press-07"}
	hubB = HubIdentity{HostName: "plant-b.azure-devices.net", DeviceID: "press-07@line:2"}
)

// withIdentity opens uri and gives the TPM its EK and SRK.
func withIdentity(t *testing.T, uri string) *TPM {
	t.Helper()
	tp := open(t, uri, Config{})
	if _, err := tp.Identity(t.Context()); err != nil {
		t.Fatal(err)
	}
	return tp
}

func checkSigns(t *testing.T, tp *TPM, key []byte) {
	t.Helper()
	for _, data := range [][]byte{[]byte("plant-a.azure-devices.net%2Fdevices%2Fpress-07\n1767225600"), bytes.Repeat([]byte("x"), 5000)} {
		sig, err := tp.Sign(t.Context(), data)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if !bytes.Equal(sig, hmacSHA256(key, data)) {
			t.Fatalf("Sign(%d bytes) = %x, want HMAC-SHA256 with the hub key %x", len(data), sig, hmacSHA256(key, data))
		}
	}
}

func checkHubIdentity(t *testing.T, tp *TPM, want HubIdentity) {
	t.Helper()
	got, err := tp.HubIdentity(t.Context())
	if err != nil || *got != want {
		t.Fatalf("HubIdentity = %v, %v; want %v", got, err, want)
	}
}

func TestHubIdentity(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := withIdentity(t, uri)
		if _, err := tp.HubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
			t.Fatalf("HubIdentity on a fresh TPM = %v, want ErrNoHubIdentity", err)
		}
		key := randBytes(t, 32)
		given := bytes.Clone(key)
		if err := tp.SetHubIdentity(t.Context(), hubA, key, false); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(key, given) {
			t.Error("SetHubIdentity changed the caller's key slice")
		}
		checkHubIdentity(t, tp, hubA)
		checkSigns(t, tp, key)
		s := stateOf(t, tp)
		if want := []tpm2.TPMHandle{SRKHandle, DefaultAuthKeyHandle, EKHandle}; !slices.Equal(s.persistent, want) {
			t.Errorf("persistent handles = %#x, want %#x", s.persistent, want)
		}
		if want := []tpm2.TPMHandle{HubIdentityIndex}; !slices.Equal(s.nv, want) {
			t.Errorf("NV indices = %#x, want %#x", s.nv, want)
		}

		// Replacing a manual identity needs no force; a 64-byte key.
		key2 := randBytes(t, 64)
		if err := tp.SetHubIdentity(t.Context(), hubB, key2, false); err != nil {
			t.Fatal(err)
		}
		checkHubIdentity(t, tp, hubB)
		checkSigns(t, tp, key2)
		if s2 := stateOf(t, tp); !slices.Equal(s2.persistent, s.persistent) || !slices.Equal(s2.nv, s.nv) {
			t.Errorf("after a replacement: persistent %#x, NV %#x; want %#x, %#x", s2.persistent, s2.nv, s.persistent, s.nv)
		}

		if err := tp.ClearHubIdentity(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := tp.HubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
			t.Errorf("HubIdentity after Clear = %v, want ErrNoHubIdentity", err)
		}
		if _, err := tp.Sign(t.Context(), []byte("x")); !errors.Is(err, ErrNoAuthKey) || !strings.Contains(err.Error(), "identity set") {
			t.Errorf("Sign after Clear = %v, want ErrNoAuthKey with a hint at identity set", err)
		}
		s = stateOf(t, tp)
		if want := []tpm2.TPMHandle{SRKHandle, EKHandle}; !slices.Equal(s.persistent, want) || len(s.nv) != 0 {
			t.Errorf("after Clear: persistent %#x, NV %#x; want %#x and none", s.persistent, s.nv, want)
		}
		if err := tp.ClearHubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
			t.Errorf("second Clear = %v, want ErrNoHubIdentity", err)
		}
	})
}

// The hub key's public area forbids duplication, and the key is made the
// same way on both TPMs.
func TestHubKeyAttributes(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := withIdentity(t, uri)
		if err := tp.SetHubIdentity(t.Context(), hubA, randBytes(t, 32), false); err != nil {
			t.Fatal(err)
		}
		k, err := tp.readPersistent(DefaultAuthKeyHandle)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.pub.Contents()
		if err != nil {
			t.Fatal(err)
		}
		a := pub.ObjectAttributes
		if want := hubKeyTemplate.ObjectAttributes; a != want || pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 || len(pub.AuthPolicy.Buffer) != 0 {
			t.Errorf("hub key: type %v, attributes %+v, policy %x; want keyed-hash with %+v, no policy", pub.Type, a, pub.AuthPolicy.Buffer, want)
		}
		if !a.FixedTPM || !a.FixedParent || a.Decrypt || a.Restricted || a.SensitiveDataOrigin || a.EncryptedDuplication {
			t.Errorf("hub key attributes %+v allow duplication or more than signing", a)
		}
	})
}

// tpm2-tools on swtpm: the record reads back with tpm2_nvread without
// owner auth; tpm2_readpublic shows fixedtpm|fixedparent; tpm2_duplicate
// fails; the key is in no NV index and in no file of swtpm's state.
func TestHubIdentityCrossCheck(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	// swtpm serves one connection at a time: tpm2-tools run between ours.
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Identity(t.Context()); err != nil {
		t.Fatal(err)
	}
	key := randBytes(t, 32)
	if err := tp.SetHubIdentity(t.Context(), hubA, key, false); err != nil {
		t.Fatal(err)
	}
	checkSigns(t, tp, key)
	nvs := stateOf(t, tp).nv
	persistDuplicable(t, tp, 0x81000201, true)
	persistDuplicable(t, tp, 0x81000202, false)
	tp.Close()
	idx := fmt.Sprintf("%#x", uint32(HubIdentityIndex))

	// The index's own empty password reads it.
	rec := sw.Tool(t, "tpm2_nvread", "-C", idx, "-s", fmt.Sprint(hubRecordSize), idx)
	if len(rec) != hubRecordSize || !bytes.HasPrefix(rec, []byte(hubMagic)) {
		t.Fatalf("tpm2_nvread %s = %d bytes %q..., want %d starting with the magic", idx, len(rec), rec[:min(len(rec), 16)], hubRecordSize)
	}
	e, ok := parseHubEntry(rec[hubHeaderSize+hubEntrySize:])
	if !ok || e.id != hubA {
		t.Errorf("entry 1 read with tpm2_nvread = %+v, %v; want %v", e.id, ok, hubA)
	}
	pubOut := string(sw.Tool(t, "tpm2_nvreadpublic", idx))
	for _, attr := range []string{"ownerwrite", "ownerread", "authread", "no_da", "written"} {
		if !strings.Contains(pubOut, attr) {
			t.Errorf("tpm2_nvreadpublic %s lacks %s:\n%s", idx, attr, pubOut)
		}
	}
	if strings.Contains(pubOut, "authwrite") || strings.Contains(pubOut, "policywrite") {
		t.Errorf("tpm2_nvreadpublic %s: writable without the owner:\n%s", idx, pubOut)
	}

	keyPub := string(sw.Tool(t, "tpm2_readpublic", "-c", "0x81000100"))
	if !strings.Contains(keyPub, "fixedtpm|fixedparent|") || !strings.Contains(keyPub, "sign") || strings.Contains(keyPub, "decrypt") || strings.Contains(keyPub, "sensitivedataorigin") {
		t.Errorf("tpm2_readpublic 0x81000100:\n%s\nwant fixedtpm|fixedparent, sign, no decrypt", keyPub)
	}

	// tpm2_duplicate with a policy session for TPM2_Duplicate: the TPM
	// refuses the hub key. Its authPolicy is empty, so the policy check
	// alone refuses it; two siblings that do allow TPM2_Duplicate by
	// policy show what fixedTPM|fixedParent do on their own: with them the
	// TPM refuses (TPM_RC_ATTRIBUTES), without them the same tpm2_duplicate
	// succeeds.
	if err := duplicate(t, sw, 0x81000100); err == nil {
		t.Error("tpm2_duplicate of the hub key succeeded")
	}
	if err := duplicate(t, sw, 0x81000201); err == nil || !strings.Contains(err.Error(), "attributes") {
		t.Errorf("tpm2_duplicate of a fixedTPM|fixedParent key with a duplication policy = %v, want a refusal for its attributes", err)
	}
	if err := duplicate(t, sw, 0x81000202); err != nil {
		t.Errorf("tpm2_duplicate of a key without fixedTPM|fixedParent, with a duplication policy = %v, want success", err)
	}

	// No NV index holds the key.
	for _, h := range nvs {
		data := sw.Tool(t, "tpm2_nvread", "-C", "o", fmt.Sprintf("%#x", uint32(h)))
		if len(data) == 0 || leaks(key, data) {
			t.Errorf("NV index %#x: %d bytes, holds the key: %v", uint32(h), len(data), leaks(key, data))
		}
	}
	// swtpm keeps a persistent object, sensitive area included, in its
	// state file as a chip keeps it in its own flash: with the state in
	// clear, the key is there while it is persisted, as the DPS key is
	// (which shows that the search finds it; TestHubKeyNotOnDisk has the
	// state encrypted, as a chip's flash is out of reach). Once cleared,
	// no file of the state holds it.
	sw.Restart(t) // swtpm writes its state on shutdown
	if files := stateLeaks(t, sw.Dir, key); len(files) == 0 {
		t.Error("the search found the persisted key in no file of swtpm's state in clear: it cannot be trusted to find it")
	}
	tp, err = Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.ClearHubIdentity(t.Context()); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	sw.Restart(t)
	if files := stateLeaks(t, sw.Dir, key); len(files) != 0 {
		t.Errorf("after ClearHubIdentity, swtpm state files %v hold the key", files)
	}
}

// persistDuplicable persists at h a key of the hub key's template whose
// policy allows TPM2_Duplicate, with fixedTPM|fixedParent set or clear.
func persistDuplicable(t *testing.T, tp *TPM, h tpm2.TPMHandle, fixed bool) {
	t.Helper()
	pc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyCommandCode{Code: tpm2.TPMCCDuplicate}).Update(pc); err != nil {
		t.Fatal(err)
	}
	tmpl := hubKeyTemplate
	tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: pc.Hash().Digest}
	tmpl.ObjectAttributes.FixedTPM, tmpl.ObjectAttributes.FixedParent = fixed, fixed
	srk, err := tp.readPersistent(SRKHandle)
	if err != nil {
		t.Fatal(err)
	}
	parent := tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)}
	cr, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: randBytes(t, 32)})}},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(tp.t)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := tpm2.Load{ParentHandle: parent, InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(tp.t)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.flush(ld.ObjectHandle)
	if _, err := (tpm2.EvictControl{Auth: tp.owner(), ObjectHandle: tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name}, PersistentHandle: h}).Execute(tp.t); err != nil {
		t.Fatal(err)
	}
}

// duplicate runs tpm2_duplicate on the persistent key h to no new parent,
// in a policy session for TPM2_Duplicate; the error holds its output.
func duplicate(t *testing.T, sw *tpmtest.Swtpm, h tpm2.TPMHandle) error {
	t.Helper()
	dir := t.TempDir()
	session := filepath.Join(dir, "session.ctx")
	sw.Tool(t, "tpm2_startauthsession", "--policy-session", "-S", session)
	defer sw.Tool(t, "tpm2_flushcontext", session)
	sw.Tool(t, "tpm2_policycommandcode", "-S", session, "TPM2_CC_Duplicate")
	out, err := exec.Command(peertest.Need(t, "tpm2_duplicate"), "-T", sw.TCTI, "-C", "null", "-c", fmt.Sprintf("%#x", uint32(h)), "-G", "null",
		"-p", "session:"+session, "-r", filepath.Join(dir, "dup.priv"), "-s", filepath.Join(dir, "dup.seed")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "dup.priv")); err != nil {
		return fmt.Errorf("tpm2_duplicate succeeded but wrote no duplicate: %w", err)
	}
	return nil
}

// stateLeaks lists the files of swtpm's state folder that hold key.
func stateLeaks(t *testing.T, dir string, key []byte) []string {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("swtpm state folder: %v, %d files", err, len(files))
	}
	var found []string
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if leaks(key, data) {
			found = append(found, f.Name())
		}
	}
	return found
}

// The key never crosses the TPM bus in clear: not in the Create command,
// nor in any other command or answer of SetHubIdentity. The recorder finds
// it in a Create without parameter encryption, so the check can fail.
func TestHubKeyNotOnTheWire(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tr, err := OpenTransport(uri)
		if err != nil {
			t.Fatal(err)
		}
		r := &recorder{TPMCloser: tr}
		tp, err := New(r, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		if _, err := tp.Identity(t.Context()); err != nil {
			t.Fatal(err)
		}
		key := randBytes(t, 32)
		r.reset()
		if err := tp.SetHubIdentity(t.Context(), hubA, key, false); err != nil {
			t.Fatal(err)
		}
		sent, got := r.reset()
		var creates int
		for i, cmd := range sent {
			if commandCode(cmd) == tpm2.TPMCCCreate {
				creates++
			}
			if leaks(key, cmd, got[i]) {
				t.Errorf("command %d (%v) or its answer holds the key", i, commandCode(cmd))
			}
		}
		if creates != 1 {
			t.Errorf("SetHubIdentity sent %d TPM2_Create, want 1", creates)
		}

		// The control: the same Create, with a password session.
		srk, err := tp.readPersistent(SRKHandle)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
			InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: key})}},
			InPublic:     tpm2.New2B(hubKeyTemplate),
		}.Execute(r)
		if err != nil {
			t.Fatal(err)
		}
		_ = cr
		if sent, _ := r.reset(); !leaks(key, sent...) {
			t.Error("the recorder misses a key sent in clear")
		}
	})
}

// Bad input is refused before any TPM command; a refused replacement of a
// DPS key leaves the TPM as it was, and force replaces it.
func TestSetHubIdentityRefuses(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tr, err := OpenTransport(uri)
		if err != nil {
			t.Fatal(err)
		}
		r := &recorder{TPMCloser: tr}
		tp, err := New(r, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		_, dpsKey := activated(t, tp)
		before := stateOf(t, tp)
		key := randBytes(t, 32)
		long := strings.Repeat("a", 63) + "."
		for _, c := range []struct {
			name string
			id   HubIdentity
			key  []byte
		}{
			{"empty host", HubIdentity{DeviceID: "d"}, key},
			{"host with a path", HubIdentity{HostName: "hub.example/x", DeviceID: "d"}, key},
			{"host with a port", HubIdentity{HostName: "hub.example:8883", DeviceID: "d"}, key},
			{"host with an empty label", HubIdentity{HostName: "hub..example", DeviceID: "d"}, key},
			{"host label of 64", HubIdentity{HostName: strings.Repeat("a", 64) + ".net", DeviceID: "d"}, key},
			{"host of 254", HubIdentity{HostName: strings.Repeat(long, 4)[:254], DeviceID: "d"}, key},
			{"host not an IoT hub's", HubIdentity{HostName: "hub.example", DeviceID: "d"}, key},
			{"hub name of 2", HubIdentity{HostName: "ab.azure-devices.net", DeviceID: "d"}, key},
			{"empty device", HubIdentity{HostName: hubA.HostName}, key},
			{"device with a slash", HubIdentity{HostName: hubA.HostName, DeviceID: "a/b"}, key},
			{"device with a space", HubIdentity{HostName: hubA.HostName, DeviceID: "a b"}, key},
			{"device of 129", HubIdentity{HostName: hubA.HostName, DeviceID: strings.Repeat("d", 129)}, key},
			{"no key", hubA, nil},
			{"key of 15", hubA, key[:15]},
			{"key of 65", hubA, randBytes(t, 65)},
		} {
			r.reset()
			err := tp.SetHubIdentity(t.Context(), c.id, c.key, true)
			if !errors.Is(err, ErrHubIdentity) {
				t.Errorf("%s: SetHubIdentity = %v, want ErrHubIdentity", c.name, err)
			}
			if len(c.key) > 0 && err != nil && leaks(c.key, []byte(err.Error())) {
				t.Errorf("%s: the error holds the key: %v", c.name, err)
			}
			if sent, _ := r.reset(); len(sent) != 0 {
				t.Errorf("%s: %d TPM commands sent", c.name, len(sent))
			}
		}
		// The longest identity fits.
		longest := HubIdentity{HostName: strings.Repeat("a", 50) + ".azure-devices.net", DeviceID: strings.Repeat("d", 127) + "'"}
		if err := longest.Validate(); err != nil {
			t.Errorf("Validate(longest) = %v", err)
		}

		err = tp.SetHubIdentity(t.Context(), hubA, key, false)
		if !errors.Is(err, ErrReplacesDPS) || leaks(key, []byte(err.Error())) {
			t.Errorf("SetHubIdentity over a DPS key = %v, want ErrReplacesDPS", err)
		}
		if after := stateOf(t, tp); !after.equal(before) {
			t.Errorf("a refused SetHubIdentity changed the TPM: %+v, was %+v", after, before)
		}
		checkSigns(t, tp, dpsKey)
		if err := tp.ClearHubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
			t.Errorf("ClearHubIdentity with a DPS key = %v, want ErrNoHubIdentity", err)
		}
		checkSigns(t, tp, dpsKey)

		if err := tp.SetHubIdentity(t.Context(), longest, key, true); err != nil {
			t.Fatal(err)
		}
		checkHubIdentity(t, tp, longest)
		checkSigns(t, tp, key)
	})
}

// A DPS registration over a manual identity removes its record.
func TestImportKeyDropsHubIdentity(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.SetHubIdentity(t.Context(), hubA, randBytes(t, 32), false); err != nil {
			t.Fatal(err)
		}
		dpsKey := randBytes(t, 32)
		if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, dpsKey)); err != nil {
			t.Fatal(err)
		}
		checkSigns(t, tp, dpsKey)
		if _, err := tp.HubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
			t.Errorf("HubIdentity after a DPS registration = %v, want ErrNoHubIdentity", err)
		}
		if nv := stateOf(t, tp).nv; slices.Contains(nv, HubIdentityIndex) {
			t.Errorf("NV indices after a DPS registration = %#x, the hub identity record is still there", nv)
		}
	})
}

// Replacing a hub identity fails at any TPM command, by a lost command, a
// lost answer or a crash: once the TPM is opened again, the old identity
// (host, device and key together) or the new one is there, never none and
// never a mix; no error holds the key; no handle is left behind.
func TestSetHubIdentitySurvivesFailureAtEveryCommand(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp, err := Open(uri, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Identity(t.Context()); err != nil {
			t.Fatal(err)
		}
		current, currentID := randBytes(t, 32), hubA
		if err := tp.SetHubIdentity(t.Context(), currentID, current, false); err != nil {
			t.Fatal(err)
		}
		tp.Close()

		tr, err := OpenTransport(uri)
		if err != nil {
			t.Fatal(err)
		}
		f := &faulty{TPMCloser: tr}
		if tp, err = New(f, Config{}); err != nil {
			t.Fatal(err)
		}
		f.arm(0, false, false)
		if err := tp.SetHubIdentity(t.Context(), hubB, randBytes(t, 32), false); err != nil {
			t.Fatal(err)
		}
		total, commands := f.n, f.cmds
		tp.Close()
		t.Logf("one replacement is %d commands: %v", total, commands)
		// The identity set just now is not known to the loop: start it
		// from a known one.
		tp, err = Open(uri, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.SetHubIdentity(t.Context(), currentID, current, false); err != nil {
			t.Fatal(err)
		}
		tp.Close()

		data := []byte("plant-a.azure-devices.net%2Fdevices%2Fpress-07\n1767225600")
		for _, mode := range []struct {
			name         string
			after, crash bool
		}{{"lost command", false, false}, {"lost answer", true, false}, {"crash", false, true}, {"crash after", true, true}} {
			for n := 1; n <= total; n++ {
				name := fmt.Sprintf("%s at command %d (%v)", mode.name, n, commands[n-1])
				tr, err := OpenTransport(uri)
				if err != nil {
					t.Fatal(err)
				}
				f := &faulty{TPMCloser: tr}
				tp, err := New(f, Config{})
				if err != nil {
					t.Fatalf("%s: New: %v", name, err)
				}
				next, nextID := randBytes(t, 32), HubIdentity{HostName: "hub-x.azure-devices.net", DeviceID: fmt.Sprintf("dev-%d-%d", n, len(mode.name))}
				if nextID.DeviceID == currentID.DeviceID {
					nextID.DeviceID += "x"
				}
				f.arm(n, mode.after, mode.crash)
				setErr := tp.SetHubIdentity(t.Context(), nextID, next, false)
				tp.Close()
				if setErr != nil && !errors.Is(setErr, errInjected) {
					t.Errorf("%s: SetHubIdentity = %v, want the injected failure in the chain", name, setErr)
				}
				if setErr != nil && leaks(next, []byte(setErr.Error())) {
					t.Errorf("%s: the error holds the key", name)
				}
				if cc := commands[n-1]; !mode.crash && !(mode.after && (cc == tpm2.TPMCCLoad || cc == tpm2.TPMCCStartAuthSession)) {
					checkNoLeaks(t, uri)
				}
				flushAll(t, uri)

				tp, err = Open(uri, Config{})
				if err != nil {
					t.Fatalf("%s: reopen: %v", name, err)
				}
				sig, signErr := tp.Sign(t.Context(), data)
				got, idErr := tp.HubIdentity(t.Context())
				switch {
				case signErr != nil || idErr != nil:
					t.Errorf("%s: SetHubIdentity = %v, then Sign = %v, HubIdentity = %v: no usable identity", name, setErr, signErr, idErr)
				case bytes.Equal(sig, hmacSHA256(next, data)):
					if *got != nextID {
						t.Errorf("%s: the new key signs, HubIdentity = %v, want %v", name, *got, nextID)
					}
					current, currentID = next, nextID
				case setErr == nil:
					t.Errorf("%s: SetHubIdentity succeeded but the old key signs", name)
				case !bytes.Equal(sig, hmacSHA256(current, data)):
					t.Errorf("%s: Sign uses neither the old nor the new key", name)
				case *got != currentID:
					t.Errorf("%s: the old key signs, HubIdentity = %v, want %v", name, *got, currentID)
				}
				checkKeySlots(t, name, tp)
				tp.Close()
				if t.Failed() {
					return
				}
			}
		}
	})
}

// A record entry decodes to what was encoded, and any bytes decode without
// panic to an entry that is valid or empty.
func FuzzHubEntry(f *testing.F) {
	f.Add(hubEntry{key: [32]byte{1}, id: hubA}.marshal())
	f.Add(hubEntry{key: [32]byte{2}, id: hubB}.marshal())
	f.Add(make([]byte, hubEntrySize))
	f.Add(bytes.Repeat([]byte{0xff}, hubEntrySize))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, ok := parseHubEntry(b)
		if !ok {
			if e != (hubEntry{}) {
				t.Fatalf("parseHubEntry(%x) = %+v, not ok, want empty", b, e)
			}
			return
		}
		if err := e.id.Validate(); err != nil {
			t.Fatalf("parseHubEntry gave an invalid identity: %v", err)
		}
		again, ok := parseHubEntry(e.marshal())
		if !ok || again != e {
			t.Fatalf("round trip of %+v = %+v, %v", e, again, ok)
		}
	})
}

// BenchmarkManualHub measures, on swtpm, SetHubIdentity replacing a
// manual identity and Sign of a SAS token's string to sign with the hub
// key, in time and TPM commands per call (docs/figures.md).
func BenchmarkManualHub(b *testing.B) {
	sw := tpmtest.StartSwtpm(b)
	tr, err := OpenTransport(sw.URI)
	if err != nil {
		b.Fatal(err)
	}
	f := &faulty{TPMCloser: tr}
	tp, err := New(f, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.Identity(b.Context()); err != nil {
		b.Fatal(err)
	}
	key := randBytes(b, 32)
	if err := tp.SetHubIdentity(b.Context(), hubA, key, false); err != nil {
		b.Fatal(err)
	}
	commands := func(b *testing.B) {
		b.ReportMetric(float64(f.n)/float64(b.N), "cmds/op")
	}
	b.Run("Set", func(b *testing.B) {
		f.arm(0, false, false)
		for b.Loop() {
			if err := tp.SetHubIdentity(b.Context(), hubB, key, false); err != nil {
				b.Fatal(err)
			}
		}
		commands(b)
	})
	b.Run("Sign", func(b *testing.B) {
		data := []byte("plant-a.azure-devices.net%2Fdevices%2Fpress-07\n1767225600")
		if _, err := tp.Sign(b.Context(), data); err != nil { // reads TPM_PT_INPUT_BUFFER once
			b.Fatal(err)
		}
		f.arm(0, false, false)
		for b.Loop() {
			if _, err := tp.Sign(b.Context(), data); err != nil {
				b.Fatal(err)
			}
		}
		commands(b)
	})
	b.Run("Read", func(b *testing.B) {
		f.arm(0, false, false)
		for b.Loop() {
			if _, err := tp.HubIdentity(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		commands(b)
	})
}

// With a configured auth key handle the hub key goes there; an auth key
// handle whose staging index is the record's is refused.
func TestHubIdentityAuthKeyHandle(t *testing.T) {
	uri := tpmtest.StartSim(t)
	if _, err := Open(uri, Config{AuthKeyHandle: 0x813FFF00}); err == nil || !strings.Contains(err.Error(), "hub identity") {
		t.Errorf("Open with auth key handle 0x813fff00 = %v, want a refusal naming the hub identity record", err)
	}
	tp := open(t, uri, Config{AuthKeyHandle: 0x81000005})
	if _, err := tp.Identity(t.Context()); err != nil {
		t.Fatal(err)
	}
	key := randBytes(t, 16)
	if err := tp.SetHubIdentity(t.Context(), hubA, key, false); err != nil {
		t.Fatal(err)
	}
	checkHubIdentity(t, tp, hubA)
	checkSigns(t, tp, key)
	if p := stateOf(t, tp).persistent; !slices.Equal(p, []tpm2.TPMHandle{SRKHandle, 0x81000005, EKHandle}) {
		t.Errorf("persistent handles = %#x, want the hub key at 0x81000005", p)
	}
	// Another auth key handle sees no identity: the record names the key
	// at 0x81000005.
	other := open(t, uri, Config{})
	if _, err := other.HubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
		t.Errorf("HubIdentity at the default handle = %v, want ErrNoHubIdentity", err)
	}
}

// TestHubKeyNotOnDisk: on swtpm with its state encrypted, as a chip keeps
// its flash out of reach, no file of the TPM's state holds the key, in any
// encoding, while it is persisted and after a restart.
func TestHubKeyNotOnDisk(t *testing.T) {
	sw := tpmtest.StartSwtpmEncrypted(t)
	key := bytes.Repeat([]byte{0x5a, 0xc3, 0x17, 0x88}, 8)
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Identity(t.Context()); err != nil { // the SRK
		t.Fatal(err)
	}
	if err := tp.SetHubIdentity(t.Context(), HubIdentity{HostName: "plant.azure-devices.net", DeviceID: "press-7"}, bytes.Clone(key), false); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	sw.Restart(t) // swtpm writes its state on shutdown
	if files := stateLeaks(t, sw.Dir, key); len(files) != 0 {
		t.Errorf("swtpm's encrypted state holds the key in %v", files)
	}
	// The key is still there and signs.
	tp, err = Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	got, err := tp.Sign(t.Context(), []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("data"))
	if !hmac.Equal(got, m.Sum(nil)) {
		t.Error("after a restart of the encrypted swtpm the hub key signs otherwise")
	}
}

// Two auth key handles keep two hub identities: setting, clearing or
// replacing one with a DPS key leaves the other as it was.
func TestHubIdentityTwoHandles(t *testing.T) {
	uri := tpmtest.StartSim(t)
	a := withIdentity(t, uri)
	b := open(t, uri, Config{AuthKeyHandle: 0x81000005})
	keyA, keyB := randBytes(t, 32), randBytes(t, 32)
	if err := a.SetHubIdentity(t.Context(), hubA, keyA, false); err != nil {
		t.Fatal(err)
	}
	if err := b.SetHubIdentity(t.Context(), hubB, keyB, false); err != nil {
		t.Fatal(err)
	}
	checkHubIdentity(t, a, hubA)
	checkHubIdentity(t, b, hubB)
	checkSigns(t, a, keyA)
	checkSigns(t, b, keyB)

	if err := b.ClearHubIdentity(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkHubIdentity(t, a, hubA)
	checkSigns(t, a, keyA)

	if err := b.SetHubIdentity(t.Context(), hubB, keyB, false); err != nil {
		t.Fatal(err)
	}
	id, err := a.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, randBytes(t, 32))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubIdentity(t.Context()); !errors.Is(err, ErrNoHubIdentity) {
		t.Errorf("HubIdentity at 0x81000005 after a DPS registration there = %v, want ErrNoHubIdentity", err)
	}
	checkHubIdentity(t, a, hubA)
	checkSigns(t, a, keyA)
}

// HubRecordIndex maps the default auth key handle to HubIdentityIndex and
// never to a staging index of an auth key handle Config accepts.
func TestHubRecordIndex(t *testing.T) {
	if got := HubRecordIndex(DefaultAuthKeyHandle); got != HubIdentityIndex {
		t.Errorf("HubRecordIndex(default) = %#x, want %#x", uint32(got), uint32(HubIdentityIndex))
	}
	for h := tpm2.TPMHandle(0x81000000); h <= 0x817FFFFF; h += 0x100 {
		c := Config{AuthKeyHandle: h}
		if c.validate() != nil {
			continue
		}
		if s := StagingIndex(h); s >= 0x013F0000 && s <= 0x013FFFFF {
			t.Fatalf("auth key handle %#x is accepted and stages at %#x, among the hub records", uint32(h), uint32(s))
		}
		if r := HubRecordIndex(h); r < 0x013F0000 || r > 0x013FFFFF {
			t.Fatalf("HubRecordIndex(%#x) = %#x, outside the hub records' range", uint32(h), uint32(r))
		}
	}
}

// A DPS registration succeeds once the key is swapped, whatever holds the
// hub record index: an index that is not a hub identity record is left
// as it is.
func TestImportKeyLeavesForeignRecordIndex(t *testing.T) {
	tp := withIdentity(t, tpmtest.StartSim(t))
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	foreign := tpm2.TPMSNVPublic{NVIndex: HubIdentityIndex, NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{OwnerWrite: true, AuthRead: true, NT: tpm2.TPMNTOrdinary}, DataSize: 8}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tp.owner(), PublicInfo: tpm2.New2B(foreign)}).Execute(tp.t); err != nil {
		t.Fatal(err)
	}
	key := randBytes(t, 32)
	if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, key)); err != nil {
		t.Fatalf("ImportKey with a foreign index at %#x: %v", uint32(HubIdentityIndex), err)
	}
	checkSigns(t, tp, key)
	if _, err := (tpm2.NVReadPublic{NVIndex: HubIdentityIndex}).Execute(tp.t); err != nil {
		t.Errorf("the foreign index at %#x: %v, want it left as it was", uint32(HubIdentityIndex), err)
	}
}

// Validate takes what provisioner/hubcred and the relay take: the device
// ID rule is sas.ValidID, the host name rule sas.CheckHubHostName.
func TestHubIdentityValidateAgrees(t *testing.T) {
	for _, id := range []string{"press;7", "a:b", "x'y", strings.Repeat("d", 128)} {
		if err := (HubIdentity{HostName: hubA.HostName, DeviceID: id}).Validate(); err != nil {
			t.Errorf("Validate(device %q) = %v, want nil as sas.ValidID", id, err)
		}
	}
	for _, h := range []string{"lab-hub.azure-devices.net", "PLANT-A.azure-devices.us", "abc.azure-devices.cn"} {
		if err := (HubIdentity{HostName: h, DeviceID: "d"}).Validate(); err != nil {
			t.Errorf("Validate(host %q) = %v, want nil", h, err)
		}
	}
	for _, h := range []string{"hub.example", "localhost", "-ab.azure-devices.net", "a_b.azure-devices.net"} {
		if err := (HubIdentity{HostName: h, DeviceID: "d"}).Validate(); !errors.Is(err, ErrHubIdentity) {
			t.Errorf("Validate(host %q) = %v, want ErrHubIdentity", h, err)
		}
	}
}
