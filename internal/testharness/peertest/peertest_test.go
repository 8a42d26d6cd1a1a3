package peertest

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/edgetpm/edgetpm/internal/daemon"
)

// helperEnv makes the test binary a peer that prints its arguments and
// serves the address in them until SIGTERM.
const helperEnv = "PEERTEST_HELPER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("helper on", addr)
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		<-ch
		l.Close()
		return
	}
	os.Exit(m.Run())
}

// fakeTB notes how a helper ended the test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run runs f on a fakeTB as a test would, on its own goroutine.
func run(t *testing.T, f func(tb testing.TB)) *fakeTB {
	fake := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(fake)
	}()
	<-done
	return fake
}

func TestNeed(t *testing.T) {
	for _, tc := range []struct {
		name, ci string
		fatal    bool
		skip     bool
	}{
		{name: "sh"},
		{name: "sh", ci: "1"},
		{name: "no-such-peer", skip: true},
		{name: "no-such-peer", ci: "1", fatal: true},
	} {
		t.Setenv("CI", tc.ci)
		var path string
		f := run(t, func(tb testing.TB) { path = Need(tb, tc.name) })
		if (f.fatal != "") != tc.fatal || (f.skip != "") != tc.skip || (path != "") != (!tc.fatal && !tc.skip) {
			t.Errorf("Need(%q) with CI=%q = %q, fatal %q, skip %q; want fatal %v, skip %v", tc.name, tc.ci, path, f.fatal, f.skip, tc.fatal, tc.skip)
		}
	}
}

// A peer restarts on a port its spec picks; its log holds every run.
func TestPeer(t *testing.T) {
	p := New(t, "helper")
	var addr string
	start := func() {
		p.Start(2, func(attempt int) (daemon.Spec, error) {
			port, err := daemon.FreePorts(1)
			if err != nil {
				return daemon.Spec{}, err
			}
			addr = fmt.Sprintf("127.0.0.1:%d", port)
			t.Setenv(helperEnv, addr)
			return daemon.Spec{Path: os.Args[0], Ready: daemon.Listening(addr)}, nil
		})
	}
	start()
	first := addr
	p.Kill()
	if c, err := net.Dial("tcp", first); err == nil {
		c.Close()
		t.Errorf("%s answers after Kill", first)
	}
	start()
	if got := strings.Count(p.Log(), "helper on"); got != 2 {
		t.Errorf("log = %q, want both runs", p.Log())
	}
	p.Stop()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s answers after Stop", addr)
	}
}

// A peer that does not come up fails the test.
func TestPeerFails(t *testing.T) {
	f := run(t, func(tb testing.TB) {
		p := &Peer{t: tb, name: "false"}
		p.Start(1, func(int) (daemon.Spec, error) {
			return daemon.Spec{Path: "/bin/false", Ready: daemon.Listening("127.0.0.1:1")}, nil
		})
	})
	if !strings.Contains(f.fatal, "false exited") {
		t.Errorf("Start of /bin/false: fatal %q, want it exited", f.fatal)
	}
}
