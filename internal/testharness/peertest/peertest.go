// Package peertest runs a test's real peers (swtpm, Mosquitto,
// containerd, dockerd) through internal/daemon: each is stopped when the
// test ends, and its output printed when the test failed. A test whose
// peer is missing is skipped, except under CI, where scripts/test.sh
// installs every peer and a missing one is a failure.
package peertest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
)

// StopTimeout is how long a peer has to exit on SIGTERM when its test
// ends.
const StopTimeout = 15 * time.Second

// logLines is how much of a peer's output a failed test prints.
const logLines = 200

// Need returns the path of the peer binary name, or skips the test (fails
// it under CI) when it is not installed.
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "%s is not installed (scripts/test.sh installs it as root)", name)
	}
	return p
}

// NeedRoot skips the test (fails it under CI) unless it runs as root,
// which peer needs.
func NeedRoot(t testing.TB, peer string) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "%s needs root; run the tests as root", peer)
	}
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Peer is a daemon of one test, which may stop and start it again. Its
// methods are for the test's goroutine.
type Peer struct {
	t    testing.TB
	name string
	log  syncbuf.Buffer // every run's output
	proc *daemon.Process
}

// New makes a peer, not yet started, that is stopped when the test ends;
// if the test failed, the last lines of its output are printed then.
func New(t testing.TB, name string) *Peer {
	p := &Peer{t: t, name: name}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, tail(p.log.String(), logLines))
		}
	})
	return p
}

// Start starts the daemon that spec makes, with daemon.StartRetry, and
// fails the test when it does not come up.
func (p *Peer) Start(attempts int, spec func(attempt int) (daemon.Spec, error)) {
	p.t.Helper()
	proc, err := daemon.StartRetry(p.t.Context(), attempts, func(attempt int) (daemon.Spec, error) {
		s, err := spec(attempt)
		s.Name, s.Output = p.name, &p.log
		return s, err
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.proc = proc
}

// Stop stops the peer with SIGTERM, failing the test when it has to be
// killed.
func (p *Peer) Stop() {
	if p.proc == nil {
		return
	}
	if err := p.proc.Stop(StopTimeout); err != nil {
		p.t.Error(err)
	}
	p.proc = nil
}

// Kill kills the peer, like a crash.
func (p *Peer) Kill() {
	if p.proc == nil {
		return
	}
	p.proc.Kill()
	p.proc = nil
}

// Pid is the running peer's process ID, 0 when it is not running.
func (p *Peer) Pid() int {
	if p.proc == nil {
		return 0
	}
	return p.proc.Pid()
}

// Log is the peer's output so far.
func (p *Peer) Log() string { return p.log.String() }

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
