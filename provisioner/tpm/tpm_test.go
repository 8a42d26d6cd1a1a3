package tpm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/activation"
	"github.com/edgetpm/edgetpm/internal/emulator/tpmsim"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// open opens uri and, when the test ends, checks for leaked handles and
// closes it.
func open(t *testing.T, uri string, cfg Config) *TPM {
	t.Helper()
	tp, err := Open(uri, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tpmtest.CheckNoLeaks(t, tp.t)
		tp.Close()
	})
	return tp
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A real EK and the registration ID the C SDK's tpm_device_provision printed
// for it (Azure/azure-iot-sdk-c#2286).
const (
	vectorEK    = "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAtKEADl/sNRgmYAjP6gXmbccRaJoTnVixisUaek0OwAzFGN70xt9ZOYp6fhIwfcft3fdVKOrKpXYcTe72CGNkGJGlQz5ti9n2pQ0uJhcX8aefh4Onm7lVlUCQAVp1K0r6zI8vkEXWsBIvwvxk0eMJbFaq146kbTkJHIGczb89RkFH2TX+CgXeZOG9oXQzUNwktmTUacspamune5Wywc/ce8HsDFYchyUHogFhrZ/LPnzyTDXO8sSC5z5dvsUBtUME3iRYDyKgZOfBtmRMqQewD+4iH+ZEJjtsyJiWR8hFhyKROnOuqXfNFwjd5IcNU4wtlKO0cLyXmTOfQK6Da1pr5Q=="
	vectorRegID = "y5wivfciikcievvnsbpkhzcahwm4chuzx6v4hnqnlqfs3fjf6rxa"
)

func TestRegistrationIDVector(t *testing.T) {
	ek, err := base64.StdEncoding.DecodeString(vectorEK)
	if err != nil {
		t.Fatal(err)
	}
	if got := RegistrationID(ek); got != vectorRegID {
		t.Errorf("RegistrationID = %q, want %q", got, vectorRegID)
	}
	// The size prefix is part of what is hashed (docs/dps-protocol.md#registration-id).
	if got := RegistrationID(ek[2:]); got == vectorRegID {
		t.Error("RegistrationID ignores the TPM2B size prefix")
	}
}

func TestOpenBadURI(t *testing.T) {
	for _, uri := range []string{"tpm", "device:", "device:dev/tpm0", "mssim://", "mssim://127.0.0.1", "mssim://127.0.0.1:0", "mssim://127.0.0.1:2321/x", "swtpm://", "swtpm://127.0.0.1:65535", "tcp://127.0.0.1:2321"} {
		if _, err := Open(uri, Config{}); !errors.Is(err, ErrURI) {
			t.Errorf("Open(%q) = %v, want ErrURI", uri, err)
		}
	}
	if _, err := Open("device:/nonexistent/tpmrm0", Config{}); err == nil || !strings.Contains(err.Error(), "driver") {
		t.Errorf("Open(missing device) = %v, want a hint about the driver", err)
	}
	if _, err := Open(tpmtest.StartSim(t), Config{AuthKeyHandle: EKHandle}); err == nil {
		t.Error("Open accepted the EK handle as auth key handle")
	}
}

// Byte layouts of docs/dps-protocol.md#ek-and-srk.
var (
	ekPrefix  = []byte{0x01, 0x3a, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x00, 0xb2, 0x00, 0x20, 0x83, 0x71, 0x97, 0x67}
	ekParams  = []byte{0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00}
	srkPrefix = []byte{0x01, 0x1a, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x04, 0x72, 0x00, 0x00, 0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00}
)

func TestIdentity(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(id.EndorsementKey) != 316 || !bytes.HasPrefix(id.EndorsementKey, ekPrefix) || !bytes.Equal(id.EndorsementKey[44:60], ekParams) {
			t.Errorf("EK (%d bytes) does not have the TCG layout: %x", len(id.EndorsementKey), id.EndorsementKey[:60])
		}
		if len(id.StorageRootKey) != 284 || !bytes.HasPrefix(id.StorageRootKey, srkPrefix) {
			t.Errorf("SRK (%d bytes) does not have the TCG layout: %x", len(id.StorageRootKey), id.StorageRootKey[:28])
		}
		if id.RegistrationID != RegistrationID(id.EndorsementKey) || len(id.RegistrationID) != 52 {
			t.Errorf("RegistrationID = %q", id.RegistrationID)
		}
		if id.EKCertificate != nil {
			t.Errorf("EKCertificate = %v on a TPM without one", id.EKCertificate.Subject)
		}
		// Persisted: a second call reads the same keys.
		again, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.EndorsementKey, id.EndorsementKey) || !bytes.Equal(again.StorageRootKey, id.StorageRootKey) {
			t.Error("second Identity returned other keys")
		}
		for _, h := range []tpm2.TPMHandle{EKHandle, SRKHandle} {
			if _, err := tp.readPersistent(h); err != nil {
				t.Errorf("nothing persisted at %#x: %v", uint32(h), err)
			}
		}
	})
}

// The identity survives a power cycle of the TPM.
func TestIdentitySurvivesRestart(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	id1, err := tp.Identity(t.Context())
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	sw.Restart(t)
	tp = open(t, sw.URI, Config{})
	id2, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if id1.RegistrationID != id2.RegistrationID {
		t.Errorf("registration ID changed across restart: %s, then %s", id1.RegistrationID, id2.RegistrationID)
	}
}

// A swtpm started without not-need-init is powered on and started by Open.
func TestOpenInitialisesSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpmFlags(t, "")
	tp := open(t, sw.URI, Config{})
	if _, err := tp.Identity(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestRefusesWrongKindAtEKHandle(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		// Persist an SRK (no EK policy) where the EK belongs.
		cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.RSASRKTemplate)}.Execute(tp.t)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tpm2.EvictControl{Auth: tpm2.TPMRHOwner, ObjectHandle: tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name}, PersistentHandle: EKHandle}.Execute(tp.t)
		tp.flush(cp.ObjectHandle)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tp.Identity(t.Context())
		if err == nil || !strings.Contains(err.Error(), "not the expected kind") {
			t.Fatalf("Identity with a foreign key at the EK handle = %v, want a refusal", err)
		}
		// It was left as it was.
		k, err := tp.readPersistent(EKHandle)
		if err != nil || !bytes.Equal(k.name.Buffer, cp.Name.Buffer) {
			t.Errorf("the object at the EK handle was changed: %v", err)
		}
	})
}

func TestActivateAndSign(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Sign(t.Context(), []byte("x")); !errors.Is(err, ErrNoAuthKey) {
			t.Errorf("Sign before activation = %v, want ErrNoAuthKey", err)
		}
		key := randBytes(t, 32)
		blob, err := activation.Build(rand.Reader, id.EndorsementKey, id.StorageRootKey, key, []byte("https://example.invalid/"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.ImportKey(t.Context(), blob); err != nil {
			t.Fatal(err)
		}
		sas := []byte("0ne00000000%2Fregistrations%2F" + id.RegistrationID + "\n1767225600")
		for _, data := range [][]byte{sas, randBytes(t, 1024), randBytes(t, 1025), randBytes(t, 5000)} {
			got, err := tp.Sign(t.Context(), data)
			if err != nil {
				t.Fatalf("Sign(%d bytes): %v", len(data), err)
			}
			if want := hmacSHA256(key, data); !bytes.Equal(got, want) {
				t.Errorf("Sign(%d bytes) = %x, want %x", len(data), got, want)
			}
		}
		// A second activation replaces the key.
		key2 := randBytes(t, 32)
		blob2, err := activation.Build(rand.Reader, id.EndorsementKey, id.StorageRootKey, key2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.ImportKey(t.Context(), blob2); err != nil {
			t.Fatal(err)
		}
		if got, _ := tp.Sign(t.Context(), sas); !bytes.Equal(got, hmacSHA256(key2, sas)) {
			t.Error("Sign after a second activation does not use the new key")
		}
	})
}

func TestBadBlobKeepsOldKey(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		id, oldKey := activated(t, tp)
		good := blobFor(t, id.EndorsementKey, id.StorageRootKey, randBytes(t, 32))
		b, err := activation.Parse(good)
		if err != nil {
			t.Fatal(err)
		}
		cases := map[string][]byte{
			"truncated":  good[:len(good)-1],
			"trailing":   append(append([]byte(nil), good...), 0),
			"other TPM":  blobFor(t, otherEK(t, id.EndorsementKey), id.StorageRootKey, randBytes(t, 32)),
			"other SRK":  blobFor(t, id.EndorsementKey, otherEK(t, id.StorageRootKey), randBytes(t, 32)),
			"not a blob": []byte("hello"),
			"empty":      nil,
		}
		// Flip one byte inside each of the five fields the TPM checks.
		flip := func(f []byte) []byte {
			f = append([]byte(nil), f...)
			f[len(f)-1] ^= 0x01
			return f
		}
		for i, mutate := range []func(c *activation.Blob){
			func(c *activation.Blob) { c.CredentialBlob = flip(c.CredentialBlob) },
			func(c *activation.Blob) { c.Secret = flip(c.Secret) },
			func(c *activation.Blob) { c.Duplicate = flip(c.Duplicate) },
			func(c *activation.Blob) { c.InSymSeed = flip(c.InSymSeed) },
			func(c *activation.Blob) { c.Public = flip(c.Public) },
		} {
			c := *b
			mutate(&c)
			cases[fmt.Sprintf("field %d", i+1)] = c.Marshal()
		}
		for name, bad := range cases {
			if err := tp.ImportKey(t.Context(), bad); err == nil {
				t.Errorf("%s: ImportKey accepted a bad blob", name)
			} else if !errors.Is(err, ErrActivation) && !errors.Is(err, activation.ErrMalformed) {
				t.Errorf("%s: ImportKey = %v, want ErrActivation or ErrMalformed", name, err)
			}
			data := []byte("still works")
			if got, err := tp.Sign(t.Context(), data); err != nil || !bytes.Equal(got, hmacSHA256(oldKey, data)) {
				t.Fatalf("%s: the old key is no longer usable: %v", name, err)
			}
		}
	})
}

func TestSignChallenge(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp := open(t, uri, Config{})
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		challenge := randBytes(t, 32)
		data := []byte("0ne00000000%2Fregistrations%2F" + id.RegistrationID + "\n1767225600")
		// Before any registration there is no auth key, and signing a
		// challenge does not create one.
		got, err := tp.SignChallenge(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, challenge), data)
		if err != nil {
			t.Fatal(err)
		}
		if want := hmacSHA256(challenge, data); !bytes.Equal(got, want) {
			t.Errorf("SignChallenge = %x, want %x", got, want)
		}
		if _, err := tp.Sign(t.Context(), data); !errors.Is(err, ErrNoAuthKey) {
			t.Errorf("Sign after SignChallenge = %v, want ErrNoAuthKey: the challenge key was persisted", err)
		}
		// With an auth key in place, a challenge leaves it as it was.
		_, hubKey := activated(t, tp)
		long := randBytes(t, 3000)
		if got, err := tp.SignChallenge(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, challenge), long); err != nil || !bytes.Equal(got, hmacSHA256(challenge, long)) {
			t.Errorf("SignChallenge(3000 bytes) = %x, %v; want the HMAC sequence result", got, err)
		}
		if got, err := tp.Sign(t.Context(), data); err != nil || !bytes.Equal(got, hmacSHA256(hubKey, data)) {
			t.Errorf("Sign after SignChallenge = %x, %v; want the auth key's HMAC", got, err)
		}
		bad := blobFor(t, otherEK(t, id.EndorsementKey), id.StorageRootKey, challenge)
		if _, err := tp.SignChallenge(t.Context(), bad, data); !errors.Is(err, ErrActivation) {
			t.Errorf("SignChallenge(blob for another TPM) = %v, want ErrActivation", err)
		}
	})
}

// blobFor builds an activation blob of key for the TPM with ek and srk.
func blobFor(t *testing.T, ek, srk, key []byte) []byte {
	t.Helper()
	b, err := activation.Build(rand.Reader, ek, srk, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// activated gives tp its identity and activates a fresh random key, as a
// DPS registration would.
func activated(t *testing.T, tp *TPM) (*Identity, []byte) {
	t.Helper()
	id, err := tp.Identity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key := randBytes(t, 32)
	if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, key)); err != nil {
		t.Fatal(err)
	}
	return id, key
}

// otherEK returns a key of the same shape with another modulus.
func otherEK(t *testing.T, tpm2b []byte) []byte {
	t.Helper()
	pub, err := activation.DecodePublic(tpm2b)
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tpm2.New2B(*pub))
}

func TestHierarchyPasswords(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		endorsement, owner := []byte("e-secret"), []byte("o-secret")
		setup := open(t, uri, Config{})
		for h, pw := range map[tpm2.TPMHandle][]byte{tpm2.TPMRHEndorsement: endorsement, tpm2.TPMRHOwner: owner} {
			if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: h, NewAuth: tpm2.TPM2BAuth{Buffer: pw}}).Execute(setup.t); err != nil {
				t.Fatal(err)
			}
		}
		tp := &TPM{t: setup.t, cfg: Config{AuthKeyHandle: DefaultAuthKeyHandle, OwnerAuth: owner}}
		_, err := tp.Identity(t.Context())
		if !errors.Is(err, ErrAuthorization) || !strings.Contains(err.Error(), "endorsement hierarchy password") || !strings.Contains(err.Error(), "EDGE_TPM_ENDORSEMENT_AUTH") {
			t.Fatalf("Identity with a wrong endorsement password = %v, want a plain ErrAuthorization", err)
		}
		if strings.Contains(err.Error(), string(endorsement)) {
			t.Error("the error shows the password")
		}
		tp.cfg = Config{AuthKeyHandle: DefaultAuthKeyHandle, EndorsementAuth: endorsement}
		if _, err := tp.Identity(t.Context()); !errors.Is(err, ErrAuthorization) || !strings.Contains(err.Error(), "owner hierarchy") {
			t.Fatalf("Identity with a wrong owner password = %v, want ErrAuthorization", err)
		}
		tp.cfg = Config{AuthKeyHandle: DefaultAuthKeyHandle, EndorsementAuth: endorsement, OwnerAuth: owner}
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		key := randBytes(t, 32)
		blob := blobFor(t, id.EndorsementKey, id.StorageRootKey, key)
		// PolicySecret(TPM_RH_ENDORSEMENT) needs the endorsement password.
		tp.cfg.EndorsementAuth = nil
		if err := tp.ImportKey(t.Context(), blob); !errors.Is(err, ErrAuthorization) {
			t.Fatalf("ImportKey with a wrong endorsement password = %v, want ErrAuthorization", err)
		}
		tp.cfg.EndorsementAuth = endorsement
		if err := tp.ImportKey(t.Context(), blob); err != nil {
			t.Fatal(err)
		}
		if got, _ := tp.Sign(t.Context(), []byte("m")); !bytes.Equal(got, hmacSHA256(key, []byte("m"))) {
			t.Error("Sign with hierarchy passwords set gives the wrong HMAC")
		}
	})
}

func TestExplainLockout(t *testing.T) {
	err := explain(tpm2.TPMRCLockout, "owner")
	if !errors.Is(err, ErrLockout) || !errors.Is(err, tpm2.TPMRCLockout) || !strings.Contains(err.Error(), "tpm2_dictionarylockout") {
		t.Errorf("explain(lockout) = %v", err)
	}
}

// Signing from many goroutines is serialized and always right.
func TestConcurrentSign(t *testing.T) {
	tp := open(t, tpmtest.StartSim(t), Config{})
	_, key := activated(t, tp)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				data := bytes.Repeat([]byte{byte(g), byte(i)}, 700*(i%2)+1) // both paths
				got, err := tp.Sign(context.Background(), data)
				if err != nil || !bytes.Equal(got, hmacSHA256(key, data)) {
					errs <- fmt.Errorf("goroutine %d, sign %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// counting counts the commands sent to a TPM, and the CreatePrimary ones.
type counting struct {
	transport.TPMCloser
	n, createPrimary int
}

func (c *counting) Send(cmd []byte) ([]byte, error) {
	c.n++
	if len(cmd) >= 10 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCCreatePrimary {
		c.createPrimary++
	}
	return c.TPMCloser.Send(cmd)
}

// BenchmarkIdentity reports what `identity` costs on swtpm once the keys are
// persisted: TPM commands and time per call.
func BenchmarkIdentity(b *testing.B) {
	sw := tpmtest.StartSwtpm(b)
	tr, err := OpenTransport(sw.URI)
	if err != nil {
		b.Fatal(err)
	}
	c := &counting{TPMCloser: tr}
	tp, err := New(c, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.Identity(b.Context()); err != nil {
		b.Fatal(err)
	}
	c.n, c.createPrimary = 0, 0
	b.ResetTimer()
	for b.Loop() {
		if _, err := tp.Identity(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.n)/float64(b.N), "tpm-cmds/op")
	if c.createPrimary > 0 {
		b.Errorf("identity with persisted keys ran CreatePrimary %d times", c.createPrimary)
	}
}

// The reference simulator served over mssim starts powered off: Open powers
// it on through the platform port, and a second Open finds it started.
func TestOpenPowersOnReferenceSimulator(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cmdL, platL, err := tpmsim.Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	port := cmdL.Addr().(*net.TCPAddr).Port
	if platL.Addr().(*net.TCPAddr).Port != port+1 {
		t.Fatalf("tpmsim.Listen: ports %v and %v, want adjacent", cmdL.Addr(), platL.Addr())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- tpmsim.New(sim).Serve(ctx, cmdL, platL) }()
	defer func() { cancel(); <-done }()

	uri := fmt.Sprintf("mssim://127.0.0.1:%d", port)
	var regIDs []string
	for range 2 {
		tp, err := Open(uri, Config{})
		if err != nil {
			t.Fatal(err)
		}
		id, err := tp.Identity(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		tpmtest.CheckNoLeaks(t, tp.t)
		tp.Close()
		regIDs = append(regIDs, id.RegistrationID)
	}
	if regIDs[0] != regIDs[1] {
		t.Errorf("registration ID changed between connections: %v", regIDs)
	}
}
