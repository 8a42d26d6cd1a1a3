package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv makes the test binary a daemon: "listen ADDR" serves ADDR
// until SIGTERM, "stubborn ADDR" serves it and ignores SIGTERM, "fail"
// exits 3 at once.
const helperEnv = "DAEMON_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		helper(strings.Fields(h))
		return
	}
	goleak.VerifyTestMain(m)
}

func helper(args []string) {
	switch args[0] {
	case "fail":
		fmt.Fprintln(os.Stderr, "helper: bad configuration")
		os.Exit(3)
	}
	l, err := net.Listen("tcp", args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer l.Close()
	fmt.Println("helper: listening")
	if args[0] == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
		select {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	<-ch
}

// spec runs the test binary as the helper with args.
func spec(t *testing.T, out *strings.Builder, args string) Spec {
	t.Helper()
	t.Setenv(helperEnv, args)
	return Spec{Path: os.Args[0], Output: out, Timeout: 5 * time.Second}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

func TestStartStop(t *testing.T) {
	var out strings.Builder
	addr := freeAddr(t)
	s := spec(t, &out, "listen "+addr)
	s.Ready = Listening(addr)
	p, err := Start(t.Context(), s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Errorf("Stop = %v, want nil", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if !strings.Contains(out.String(), "helper: listening") {
		t.Errorf("output = %q, want the helper's", out.String())
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}
}

// A daemon that exits fails Start at once, not after Timeout.
func TestStartExits(t *testing.T) {
	var out strings.Builder
	s := spec(t, &out, "fail")
	s.Name = "helper"
	s.Ready = Listening(freeAddr(t))
	s.Timeout = time.Minute
	start := time.Now()
	_, err := Start(t.Context(), s)
	if err == nil || !strings.Contains(err.Error(), "helper exited") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Start = %v, want helper exited with exit status 3", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Start failed after %v", d)
	}
	if !strings.Contains(out.String(), "bad configuration") {
		t.Errorf("output = %q, want the helper's", out.String())
	}
}

// A daemon that does not answer in time is killed.
func TestStartTimeout(t *testing.T) {
	var out strings.Builder
	s := spec(t, &out, "listen "+freeAddr(t))
	s.Name = "helper"
	s.Timeout = 300 * time.Millisecond
	s.Ready = func(context.Context) error { return errors.New("not yet") }
	_, err := Start(t.Context(), s)
	if err == nil || !strings.Contains(err.Error(), "helper does not answer") || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("Start = %v, want it not answering: not yet", err)
	}
}

func TestStartContext(t *testing.T) {
	var out strings.Builder
	s := spec(t, &out, "listen "+freeAddr(t))
	s.Ready = func(context.Context) error { return errors.New("not yet") }
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := Start(ctx, s); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start = %v, want %v", err, context.DeadlineExceeded)
	}
}

// Stop kills a daemon that ignores SIGTERM, and says so.
func TestStopKills(t *testing.T) {
	var out strings.Builder
	addr := freeAddr(t)
	s := spec(t, &out, "stubborn "+addr)
	s.Name = "helper"
	s.Ready = Listening(addr)
	p, err := Start(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "helper did not stop on SIGTERM") {
		t.Errorf("Stop = %v, want it killed", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Stop")
	}
}

func TestKill(t *testing.T) {
	var out strings.Builder
	addr := freeAddr(t)
	s := spec(t, &out, "stubborn "+addr)
	s.Ready = Listening(addr)
	p, err := Start(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Kill")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s still answers after Kill", addr)
	}
}

// StartRetry tries again, with the next attempt's Spec, when one fails.
func TestStartRetry(t *testing.T) {
	var out strings.Builder
	addr := freeAddr(t)
	var attempts []int
	p, err := StartRetry(t.Context(), 3, func(attempt int) (Spec, error) {
		attempts = append(attempts, attempt)
		args := "fail"
		if attempt == 2 {
			args = "listen " + addr
		}
		s := spec(t, &out, args)
		s.Ready = Listening(addr)
		return s, nil
	})
	if err != nil {
		t.Fatalf("StartRetry: %v", err)
	}
	defer p.Stop(5 * time.Second)
	if fmt.Sprint(attempts) != "[0 1 2]" {
		t.Errorf("attempts = %v, want [0 1 2]", attempts)
	}
}

func TestStartRetryFails(t *testing.T) {
	var out strings.Builder
	n := 0
	_, err := StartRetry(t.Context(), 2, func(int) (Spec, error) {
		n++
		s := spec(t, &out, "fail")
		s.Name = "helper"
		s.Ready = Listening(freeAddr(t))
		return s, nil
	})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || n != 2 {
		t.Errorf("StartRetry = %v after %d attempts, want exit status 3 after 2", err, n)
	}
	bad := errors.New("no config")
	if _, err := StartRetry(t.Context(), 2, func(int) (Spec, error) { return Spec{}, bad }); !errors.Is(err, bad) {
		t.Errorf("StartRetry = %v, want %v", err, bad)
	}
}

func TestFreePorts(t *testing.T) {
	p, err := FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{p, p + 1} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d of FreePorts(2) = %d: %v", port, p, err)
			continue
		}
		l.Close()
	}
}
