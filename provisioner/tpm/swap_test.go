package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

var errInjected = errors.New("injected TPM failure")

// faulty is a transport that fails the Nth command once armed: before the
// TPM sees it (a lost command) or after it ran (a lost answer), and, in
// crash mode, every command after it too, as when the process dies.
type faulty struct {
	transport.TPMCloser
	mu     sync.Mutex
	n      int // commands sent since armed
	failAt int // 0: never
	after  bool
	crash  bool
	cmds   []tpm2.TPMCC
	// onCC and onNth set failAt when the onNth command onCC is sent.
	onCC  tpm2.TPMCC
	onNth int
}

func (f *faulty) arm(failAt int, after, crash bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n, f.failAt, f.after, f.crash, f.cmds, f.onNth = 0, failAt, after, crash, nil, 0
}

// armOn arms f to crash at the nth command with code cc.
func (f *faulty) armOn(cc tpm2.TPMCC, nth int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n, f.failAt, f.after, f.crash, f.cmds = 0, 0, false, true, nil
	f.onCC, f.onNth = cc, nth
}

func (f *faulty) Send(cmd []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(cmd) >= 10 {
		cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
		f.cmds = append(f.cmds, cc)
		if f.onNth > 0 && cc == f.onCC {
			if f.onNth--; f.onNth == 0 {
				f.failAt = f.n
			}
		}
	}
	switch {
	case f.failAt == 0 || f.n < f.failAt || f.n > f.failAt && !f.crash:
		return f.TPMCloser.Send(cmd)
	case f.n == f.failAt && f.after:
		f.TPMCloser.Send(cmd)
	}
	return nil, errInjected
}

// flushAll does what the kernel's resource manager does when a process
// dies: it flushes the transient objects and sessions the process left.
func flushAll(t *testing.T, uri string) {
	t.Helper()
	tr, err := OpenTransport(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		hs, err := tpmtest.Handles(tr, first)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tr); err != nil {
				t.Fatalf("flush %#x: %v", h, err)
			}
		}
	}
}

// checkNoLeaks checks, on a connection of its own, that the TPM at uri
// holds no transient object or session.
func checkNoLeaks(t *testing.T, uri string) {
	t.Helper()
	tr, err := OpenTransport(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tpmtest.CheckNoLeaks(t, tr)
}

// checkKeySlots checks what an interrupted swap may leave after Open: the
// EK, the SRK and one auth key persisted, no staging index, no transient
// object or session.
func checkKeySlots(t *testing.T, name string, tp *TPM) {
	t.Helper()
	tpmtest.CheckNoLeaks(t, tp.t)
	persistent, err := tpmtest.Handles(tp.t, 0x81000000)
	if err != nil {
		t.Fatal(err)
	}
	if want := []tpm2.TPMHandle{SRKHandle, tp.cfg.AuthKeyHandle, EKHandle}; !slices.Equal(persistent, want) {
		t.Errorf("%s: persistent handles = %#x, want %#x", name, persistent, want)
	}
	nv, err := tpmtest.Handles(tp.t, 0x01000000)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(nv, StagingIndex(tp.cfg.AuthKeyHandle)) {
		t.Errorf("%s: the staging NV index %#x is still defined", name, uint32(StagingIndex(tp.cfg.AuthKeyHandle)))
	}
}

// A key import that fails at any TPM command, by a lost command, a lost
// answer or a crash, leaves a usable key once the TPM is opened again: the
// old one or the new one, never none; and no handle behind.
func TestImportKeySurvivesFailureAtEveryCommand(t *testing.T) {
	tpmtest.Each(t, func(t *testing.T, uri string) {
		tp, err := Open(uri, Config{})
		if err != nil {
			t.Fatal(err)
		}
		id, current := activated(t, tp)
		tp.Close()

		// Count the commands of one import.
		tr, err := OpenTransport(uri)
		if err != nil {
			t.Fatal(err)
		}
		f := &faulty{TPMCloser: tr}
		tp, err = New(f, Config{})
		if err != nil {
			t.Fatal(err)
		}
		f.arm(0, false, false)
		next := randBytes(t, 32)
		if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, next)); err != nil {
			t.Fatal(err)
		}
		total, commands := f.n, f.cmds
		tp.Close()
		current = next
		t.Logf("one import is %d commands: %v", total, commands)

		data := []byte("0ne00000000%2Fregistrations%2Fr\n1767225600")
		for _, mode := range []struct {
			name         string
			after, crash bool
		}{{"lost command", false, false}, {"lost answer", true, false}, {"crash", false, true}, {"crash after", true, true}} {
			for n := 1; n <= total; n++ {
				name := fmt.Sprintf("%s at command %d (%#x)", mode.name, n, commands[n-1])
				tr, err := OpenTransport(uri)
				if err != nil {
					t.Fatal(err)
				}
				f := &faulty{TPMCloser: tr}
				tp, err := New(f, Config{})
				if err != nil {
					t.Fatalf("%s: New: %v", name, err)
				}
				next := randBytes(t, 32)
				blob := blobFor(t, id.EndorsementKey, id.StorageRootKey, next)
				f.arm(n, mode.after, mode.crash)
				importErr := tp.ImportKey(t.Context(), blob)
				tp.Close()
				if importErr != nil && !errors.Is(importErr, errInjected) {
					t.Errorf("%s: ImportKey = %v, want the injected failure in the chain", name, importErr)
				}
				// A lost answer to a command that loads an object or starts
				// a session leaves a handle nobody knows; otherwise ImportKey
				// must flush all it loaded, even after a failure. Then what
				// a resource manager does when the process ends.
				if cc := commands[n-1]; !mode.crash && !(mode.after && (cc == tpm2.TPMCCLoad || cc == tpm2.TPMCCStartAuthSession)) {
					checkNoLeaks(t, uri)
				}
				flushAll(t, uri)

				tp, err = Open(uri, Config{})
				if err != nil {
					t.Fatalf("%s: reopen: %v", name, err)
				}
				sig, err := tp.Sign(t.Context(), data)
				switch {
				case err != nil:
					t.Errorf("%s: ImportKey = %v, then Sign = %v: no usable key", name, importErr, err)
				case bytes.Equal(sig, hmacSHA256(next, data)):
					current = next
				case importErr == nil:
					t.Errorf("%s: ImportKey succeeded but the old key signs", name)
				case !bytes.Equal(sig, hmacSHA256(current, data)):
					t.Errorf("%s: Sign uses neither the old nor the new key", name)
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

// After a crash between evicting the old key and persisting the new one,
// the next Open leaves exactly the EK, the SRK and the auth key persisted
// and no staging index, as tpm2_getcap reads them.
func TestInterruptedSwapCrossCheck(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	tp, err := Open(sw.URI, Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := activated(t, tp)
	tp.Close()

	tr, err := OpenTransport(sw.URI)
	if err != nil {
		t.Fatal(err)
	}
	f := &faulty{TPMCloser: tr}
	if tp, err = New(f, Config{}); err != nil {
		t.Fatal(err)
	}
	next := randBytes(t, 32)
	// Crash at the second EvictControl: the old key is gone, the new one
	// not yet at the auth key handle.
	f.armOn(tpm2.TPMCCEvictControl, 2)
	if err := tp.ImportKey(t.Context(), blobFor(t, id.EndorsementKey, id.StorageRootKey, next)); !errors.Is(err, errInjected) {
		t.Fatalf("ImportKey = %v, want the injected crash", err)
	}
	tp.Close()
	flushAll(t, sw.URI)

	listed := func(what string) string {
		t.Helper()
		peertest.Need(t, "tpm2_getcap")
		out, err := exec.Command("tpm2_getcap", "-T", sw.TCTI, what).CombinedOutput()
		if err != nil {
			t.Fatalf("tpm2_getcap %s: %v\n%s", what, err, out)
		}
		return string(out)
	}
	// Before Open: the staging index holds the new key, the slot is empty.
	if nv := listed("handles-nv-index"); !strings.Contains(nv, fmt.Sprintf("%#x", uint32(StagingIndex(DefaultAuthKeyHandle)))) {
		t.Errorf("before recovery, tpm2_getcap handles-nv-index = %q, want the staging index", nv)
	}
	if p := listed("handles-persistent"); strings.Contains(p, "0x81000100") {
		t.Errorf("before recovery, tpm2_getcap handles-persistent = %q, want no auth key", p)
	}

	if tp, err = Open(sw.URI, Config{}); err != nil {
		t.Fatal(err)
	}
	data := []byte("after recovery")
	if sig, err := tp.Sign(t.Context(), data); err != nil || !bytes.Equal(sig, hmacSHA256(next, data)) {
		t.Errorf("Sign after recovery = %x, %v; want the new key's", sig, err)
	}
	tp.Close()
	if p, want := listed("handles-persistent"), "- 0x81000001\n- 0x81000100\n- 0x81010001\n"; p != want {
		t.Errorf("tpm2_getcap handles-persistent = %q, want %q", p, want)
	}
	if nv := listed("handles-nv-index"); strings.Contains(nv, fmt.Sprintf("%#x", uint32(StagingIndex(DefaultAuthKeyHandle)))) {
		t.Errorf("after recovery, tpm2_getcap handles-nv-index = %q, still the staging index", nv)
	}
}
