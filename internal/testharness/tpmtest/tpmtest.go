// Package tpmtest runs tests against real TPMs: the reference simulator in
// this process and swtpm as a separate process on loopback, fresh or
// manufactured by swtpm_setup with EK certificates from a local CA
// (StartSwtpmWithEKCert); it runs tpm2-tools against swtpm and checks
// that a test leaves no transient objects or sessions behind.
package tpmtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/emulator/tpmsim"
	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
)

// Swtpm is a swtpm process serving the TPM command port and
// its control port on loopback, with its own state folder.
type Swtpm struct {
	// URI opens it with provisioner/tpm: swtpm://127.0.0.1:PORT.
	URI string
	// TCTI reaches it with tpm2-tools.
	TCTI string
	// Dir holds its state.
	Dir  string
	Port int

	flags   string
	keyFile string // the state encryption key, when the state is encrypted
	peer    *peertest.Peer
}

// StartSwtpm starts swtpm in a fresh state folder, already initialised and
// started, and stops it when the test ends.
func StartSwtpm(t testing.TB) *Swtpm {
	return StartSwtpmFlags(t, "not-need-init,startup-clear")
}

// StartSwtpmFlags starts swtpm with the given --flags ("" for none, in which
// case the TPM waits to be initialised and started by its client).
func StartSwtpmFlags(t testing.TB, flags string) *Swtpm {
	t.Helper()
	s := &Swtpm{Dir: t.TempDir(), flags: flags}
	s.start(t)
	return s
}

// StartSwtpmEncrypted is StartSwtpm with swtpm's state encrypted
// (AES-256-CBC, with a random key kept outside the state folder), as a
// chip's own flash cannot be read from outside: what the TPM persists is
// then in no file of the state folder in clear.
func StartSwtpmEncrypted(t testing.TB) *Swtpm {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	s := &Swtpm{Dir: t.TempDir(), flags: "not-need-init,startup-clear", keyFile: filepath.Join(t.TempDir(), "state.key")}
	if err := os.WriteFile(s.keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// Restart kills swtpm and starts it again on the same state, and on the
// same ports unless they were taken meanwhile, like a reboot of the
// machine.
func (s *Swtpm) Restart(t testing.TB) {
	t.Helper()
	s.peer.Kill()
	s.start(t)
}

func (s *Swtpm) start(t testing.TB) {
	t.Helper()
	bin := peertest.Need(t, "swtpm")
	if s.peer == nil {
		s.peer = peertest.New(t, "swtpm")
	}
	s.peer.Start(5, func(attempt int) (daemon.Spec, error) {
		if s.Port == 0 || attempt > 0 {
			p, err := daemon.FreePorts(2)
			if err != nil {
				return daemon.Spec{}, err
			}
			s.Port = p
		}
		args := []string{"socket", "--tpm2",
			"--tpmstate", "dir=" + s.Dir,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port+1),
		}
		if s.flags != "" {
			args = append(args, "--flags", s.flags)
		}
		if s.keyFile != "" {
			args = append(args, "--key", "file="+s.keyFile+",format=hex,mode=aes-256-cbc")
		}
		return daemon.Spec{Path: bin, Args: args, Ready: daemon.Listening(fmt.Sprintf("127.0.0.1:%d", s.Port+1))}, nil
	})
	s.URI = fmt.Sprintf("swtpm://127.0.0.1:%d", s.Port)
	s.TCTI = fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.Port)
}

// StartSim serves a fresh reference simulator, in this process, over mssim
// on loopback until the test ends, and returns its URI.
func StartSim(t testing.TB) string {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start the reference simulator: %v", err)
	}
	s, err := tpmsim.Start(sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("reference simulator: %v", err)
		}
	})
	return s.URI
}

// Each runs f as a subtest on the in-process reference simulator ("sim") and
// on a fresh swtpm.
func Each(t *testing.T, f func(t *testing.T, uri string)) {
	t.Run("sim", func(t *testing.T) { f(t, StartSim(t)) })
	t.Run("swtpm", func(t *testing.T) { f(t, StartSwtpm(t).URI) })
}

// CheckNoLeaks fails the test when the TPM holds transient objects or
// sessions (loaded or saved).
func CheckNoLeaks(t testing.TB, tpm transport.TPM) {
	t.Helper()
	for _, r := range []struct {
		what  string
		first tpm2.TPMHandle
	}{
		{"transient objects", 0x80000000},
		{"loaded sessions", 0x02000000},
		{"saved sessions", 0x03000000},
	} {
		hs, err := Handles(tpm, r.first)
		if err != nil {
			t.Fatalf("list %s: %v", r.what, err)
		}
		if len(hs) > 0 {
			t.Errorf("TPM holds %d %s after the test: %#x", len(hs), r.what, hs)
		}
	}
}

// Handles lists the handles in the range that starts at first.
func Handles(tpm transport.TPM, first tpm2.TPMHandle) ([]tpm2.TPMHandle, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
	if err != nil {
		return nil, err
	}
	hl, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	var out []tpm2.TPMHandle
	for _, h := range hl.Handle {
		// Sessions are listed by state (0x02 loaded, 0x03 saved) but keep
		// their own handles: 0x02 for HMAC, 0x03 for policy sessions.
		if h>>24 == first>>24 || isSession(first) && isSession(h) {
			out = append(out, h)
		}
	}
	return out, nil
}

func isSession(h tpm2.TPMHandle) bool { return h>>24 == 0x02 || h>>24 == 0x03 }
