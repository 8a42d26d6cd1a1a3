// Package daemon runs a peer process, such as swtpm, Mosquitto or
// containerd, for the lab and for tests: it starts it with its output
// collected, waits until it answers, and stops it.
package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultTimeout is how long Start waits for a daemon to answer when its
// Spec says nothing.
const DefaultTimeout = 10 * time.Second

// Spec is a daemon to start.
type Spec struct {
	// Name names it in errors; the default is Path's base name.
	Name string
	Path string
	Args []string
	// Env is its environment; nil means this process's.
	Env []string
	// Output receives its stdout and stderr; nil discards them. An
	// *os.File is handed to the process as it is.
	Output io.Writer
	// Ready returns nil once the daemon serves; Start calls it until then,
	// each call bounded by a second. Listening makes one; nil counts a
	// daemon ready once started.
	Ready func(context.Context) error
	// Timeout bounds the wait for Ready; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Process is a started daemon. Its methods are safe for concurrent use.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // how it exited, set before done closes
}

// Start starts the daemon s names and waits until it is ready. When it
// exits first, does not answer within s.Timeout or ctx ends, Start kills
// it and returns why. ctx bounds the wait only: the daemon runs until Stop
// or Kill.
func Start(ctx context.Context, s Spec) (*Process, error) {
	name := s.Name
	if name == "" {
		name = filepath.Base(s.Path)
	}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = s.Output, s.Output
	// A child that keeps the output pipe open must not hold up Wait.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := p.wait(ctx, s); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// wait polls s.Ready until it answers, the process exits, s.Timeout
// passes or ctx ends.
func (p *Process) wait(ctx context.Context, s Spec) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var err error
		if s.Ready != nil {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			err = s.Ready(rctx)
			cancel()
		}
		select {
		case <-p.done:
			return p.exited()
		default:
		}
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exited()
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", p.name, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%s does not answer after %v: %w", p.name, timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *Process) exited() error {
	if p.err == nil {
		return fmt.Errorf("%s exited", p.name)
	}
	return fmt.Errorf("%s exited: %w", p.name, p.err)
}

// Pid is the daemon's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the daemon has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until the daemon has exited and returns how: nil for status 0.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Stop sends the daemon SIGTERM and waits for it to exit; after timeout it
// kills it and says so.
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	p.Kill()
	return fmt.Errorf("%s did not stop on SIGTERM within %v", p.name, timeout)
}

// Kill kills the daemon, like a crash, and waits until it is gone.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// StartRetry starts the daemon spec returns for attempt 0, and, when it
// does not come up, the one it returns for the next attempt, up to
// attempts times. A daemon told to listen on a port that was free when
// picked may find it taken by then; spec picks another.
func StartRetry(ctx context.Context, attempts int, spec func(attempt int) (Spec, error)) (*Process, error) {
	var err error
	tried := 0
	for attempt := range max(attempts, 1) {
		tried++
		var s Spec
		if s, err = spec(attempt); err != nil {
			return nil, err
		}
		var p *Process
		if p, err = Start(ctx, s); err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w (attempt %d of %d)", err, tried, attempts)
}

// Listening is a Spec.Ready that answers once addr accepts TCP
// connections.
func Listening(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// FreePorts returns a port P of 127.0.0.1 with P to P+n-1 free for now
// (swtpm, for one, serves on two adjacent ports).
func FreePorts(n int) (int, error) {
	var err error
	for range 50 {
		var l net.Listener
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		for i := 1; i < n && err == nil; i++ {
			l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err == nil {
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if err == nil {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no %d adjacent free ports on 127.0.0.1: %w", n, err)
}
