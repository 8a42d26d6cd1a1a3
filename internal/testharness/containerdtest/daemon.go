package containerdtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Daemon is a containerd of the test's own.
type Daemon struct {
	// Address is its gRPC socket.
	Address string
	Root    string
	State   string

	proc *process
}

// EnvBinary names the containerd binary Start runs, instead of the one on
// PATH: scripts/test.sh runs the containerd tests a second time with a
// containerd 1.7 it builds, as Debian 12 ships 1.6 and Docker ships 1.7.
const EnvBinary = "EDGE_TEST_CONTAINERD"

// Start starts containerd with its own root, state and socket, without
// the CRI plugin, and waits until it answers. When the test ends it stops
// it (SIGTERM, then SIGKILL) and removes its folders; when the test failed
// it prints containerd's log first.
func Start(t testing.TB) *Daemon {
	t.Helper()
	needRoot(t)
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		bin = tpmtest.Need(t, "containerd")
	}
	tpmtest.Need(t, "runc")
	tpmtest.Need(t, "containerd-shim-runc-v2")
	dir := tempDir(t, "ctd")
	d := &Daemon{
		Address: filepath.Join(dir, "c.sock"),
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(dir, "state"),
	}
	cfg := filepath.Join(dir, "config.toml")
	err := os.WriteFile(cfg, fmt.Appendf(nil, `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q
`, d.Root, d.State, d.Address), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d.proc = startProcess(t, dir, bin, "--config", cfg)
	d.proc.wait(t, func(ctx context.Context) error {
		c, err := containerd.New(d.Address, containerd.WithTimeout(time.Second))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Version(ctx)
		return err
	})
	return d
}

// Docker is a dockerd that runs its containers on a Daemon, in namespace
// moby, with its classic image store (overlay2).
type Docker struct {
	// Socket is its Engine API socket.
	Socket string

	proc *process
}

// StartDocker starts dockerd on d, without touching the host's network
// (no bridge, iptables or masquerading), and waits until it answers
// /_ping. It stops when the test ends, before d.
func StartDocker(t testing.TB, d *Daemon) *Docker {
	t.Helper()
	tpmtest.Need(t, "dockerd")
	dir := tempDir(t, "dkr")
	dk := &Docker{Socket: filepath.Join(dir, "d.sock")}
	cfg := filepath.Join(dir, "daemon.json") // not the host's /etc/docker/daemon.json
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dk.proc = startProcess(t, dir, "dockerd",
		"--config-file", cfg,
		"--containerd", d.Address,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", "unix://"+dk.Socket,
		"--storage-driver", "overlay2",
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
		"--shutdown-timeout", "5",
	)
	dk.proc.wait(t, func(ctx context.Context) error {
		c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", dk.Socket)
		}}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/_ping: %s", resp.Status)
		}
		return nil
	})
	return dk
}

// RunModule starts a container from image, which must be in namespace ns,
// as IoT Edge module module: its environment has IOTEDGE_MODULEID=module
// (IoT Edge writes "$edgeAgent" and "$edgeHub" for its own). It runs under
// runc through containerd's client, as Docker would run it. When the test
// ends the task is killed and the container deleted.
func RunModule(t testing.TB, d *Daemon, ns, image, module string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), startTimeout)
	defer cancel()
	client, err := containerd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	img, err := client.GetImage(ctx, image)
	if err != nil {
		t.Fatalf("RunModule %s: %v", module, err)
	}
	id := containerID(module)
	ctr, err := client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithEnv([]string{"IOTEDGE_MODULEID=" + module})),
	)
	if err != nil {
		t.Fatalf("RunModule %s: %v", module, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), stopTimeout)
		defer cancel()
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
	})
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("RunModule %s: %v", module, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), stopTimeout)
		defer cancel()
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			t.Errorf("delete task of %s: %v", id, err)
		}
	})
	if err := task.Start(ctx); err != nil {
		t.Fatalf("RunModule %s: %v", module, err)
	}
}

// containerID makes a unique container ID for module: runc keeps the state
// of every containerd on the host in one folder per namespace.
func containerID(module string) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return -1
	}, module)
	return "edge-" + name + "-" + rand.Text()[:8]
}

// needRoot skips the test unless it runs as root, or fails it under CI.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("containerd needs root; run the tests as root")
	}
	t.Skip("containerd needs root")
}

// tempDir makes a short folder that is removed when the test ends.
func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// process is a daemon started by a test.
type process struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// startProcess starts a daemon logging to a file in dir and stops it when
// the test ends.
func startProcess(t testing.TB, dir, name string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(dir, filepath.Base(name)+".log"), exited: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// wait polls ready until it succeeds, failing the test when the daemon
// exits or does not answer in time.
func (p *process) wait(t testing.TB, ready func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v", p.name, p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer after %v: %v", p.name, startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, then SIGKILL after stopTimeout, and prints the log
// when the test failed.
func (p *process) stop(t testing.TB) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		t.Errorf("%s did not stop on SIGTERM within %v", p.name, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	if t.Failed() {
		if b, err := os.ReadFile(p.log); err == nil {
			t.Logf("%s log:\n%s", p.name, tail(b, 200))
		}
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
