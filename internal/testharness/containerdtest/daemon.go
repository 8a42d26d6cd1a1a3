package containerdtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/edgetpm/edgetpm/internal/daemon"
	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
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
	peertest.NeedRoot(t, "containerd")
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		bin = peertest.Need(t, "containerd")
	}
	peertest.Need(t, "runc")
	peertest.Need(t, "containerd-shim-runc-v2")
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
	start(t, daemon.Spec{Path: bin, Args: []string{"--config", cfg}, Ready: func(ctx context.Context) error {
		c, err := containerd.New(d.Address, containerd.WithTimeout(time.Second))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Version(ctx)
		return err
	}})
	return d
}

// Docker is a dockerd that runs its containers on a Daemon, in namespace
// moby, with its classic image store (overlay2).
type Docker struct {
	// Socket is its Engine API socket.
	Socket string
}

// StartDocker starts dockerd on d, without touching the host's network
// (no bridge, iptables or masquerading), and waits until it answers
// /_ping. It stops when the test ends, before d.
func StartDocker(t testing.TB, d *Daemon) *Docker {
	t.Helper()
	bin := peertest.Need(t, "dockerd")
	dir := tempDir(t, "dkr")
	dk := &Docker{Socket: filepath.Join(dir, "d.sock")}
	cfg := filepath.Join(dir, "daemon.json") // not the host's /etc/docker/daemon.json
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, daemon.Spec{Path: bin, Args: []string{
		"--config-file", cfg,
		"--containerd", d.Address,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", "unix://" + dk.Socket,
		"--storage-driver", "overlay2",
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
		"--shutdown-timeout", "5",
	}, Ready: func(ctx context.Context) error {
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
	}})
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

// start starts the daemon s names and stops it when the test ends.
func start(t testing.TB, s daemon.Spec) {
	t.Helper()
	s.Timeout = startTimeout
	peertest.New(t, filepath.Base(s.Path)).Start(1, func(int) (daemon.Spec, error) { return s, nil })
}
