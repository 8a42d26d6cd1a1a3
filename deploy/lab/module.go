package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/edgetpm/edgetpm/internal/daemon"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// stopTimeout is how long a module has to exit after SIGTERM, as
// Docker's default stop timeout.
const stopTimeout = 10 * time.Second

// containerUID is the user the relay image runs as (deploy/image).
const containerUID = 65532

// processLauncher runs the module as a local process.
type processLauncher struct{ bin string }

func (p processLauncher) String() string { return "as a local process (" + p.bin + ")" }

func (p processLauncher) run(ctx context.Context, m moduleSpec, started func()) error {
	out, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	proc, err := daemon.Start(ctx, daemon.Spec{
		Name:   ModuleID,
		Path:   p.bin,
		Args:   append([]string{"--data", m.dataDir}, m.args...),
		Env:    append(environWithout("IOTEDGE_"), m.env...),
		Output: out,
	})
	if err != nil {
		return err
	}
	started()
	select {
	case <-proc.Done():
		return proc.Wait()
	case <-ctx.Done():
		return proc.Stop(stopTimeout)
	}
}

// containerdLauncher runs the module as a container through containerd and
// runc, as IoT Edge's moby engine does: from the side-loaded image, in the
// host's network, with the workload socket and a data folder bound in.
type containerdLauncher struct {
	client    *ctd.Client
	address   string
	namespace string
	image     string
	id        string
}

func newContainerdLauncher(address, namespace, image, stateDir string) (*containerdLauncher, error) {
	client, err := ctd.New(address, ctd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	// runc keeps the containers of every containerd together: one name
	// per state folder keeps labs apart.
	sum := sha256.Sum256([]byte(stateDir))
	return &containerdLauncher{client: client, address: address, namespace: namespace, image: image, id: "edgetpm-lab-" + ModuleID + "-" + hex.EncodeToString(sum[:4])}, nil
}

func (c *containerdLauncher) String() string {
	return fmt.Sprintf("as container %s of %s in containerd %s (namespace %s)", c.id, c.image, c.address, c.namespace)
}

func (c *containerdLauncher) close() error { return c.client.Close() }

func (c *containerdLauncher) run(ctx context.Context, m moduleSpec, started func()) error {
	// Removal must outlive ctx.
	cctx := namespaces.WithNamespace(context.WithoutCancel(ctx), c.namespace)
	img, err := c.client.GetImage(cctx, c.image)
	if err != nil {
		return fmt.Errorf("image %s: %w", c.image, err)
	}
	if old, err := c.client.LoadContainer(cctx, c.id); err == nil {
		// Left by a lab that did not stop cleanly.
		if err := remove(cctx, old); err != nil {
			return err
		}
	}
	ctr, err := c.client.NewContainer(cctx, c.id,
		ctd.WithImage(img),
		ctd.WithNewSnapshot(c.id, img),
		ctd.WithNewSpec(
			oci.WithImageConfig(img),
			oci.WithHostNamespace(specs.NetworkNamespace),
			oci.WithHostHostsFile,
			oci.WithHostResolvconf,
			oci.WithEnv(m.env),
			appendArgs(m.args...),
			oci.WithMounts([]specs.Mount{
				{Destination: filepath.Dir(containerSocket), Type: "bind", Source: filepath.Dir(m.socket), Options: []string{"rbind", "rw"}},
				{Destination: "/data", Type: "bind", Source: m.dataDir, Options: []string{"rbind", "rw"}},
			}),
		),
	)
	if err != nil {
		return fmt.Errorf("create container %s: %w", c.id, err)
	}
	defer remove(cctx, ctr)
	task, err := ctr.NewTask(cctx, cio.LogFile(m.logFile))
	if err != nil {
		return fmt.Errorf("create task %s: %w", c.id, err)
	}
	exited, err := task.Wait(cctx)
	if err != nil {
		return err
	}
	if err := task.Start(cctx); err != nil {
		return fmt.Errorf("start %s: %w", c.id, err)
	}
	started()
	select {
	case st := <-exited:
		return fmt.Errorf("container %s exited: %w", c.id, exitError(st))
	case <-ctx.Done():
	}
	if err := task.Kill(cctx, syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		task.Kill(cctx, syscall.SIGKILL)
		<-exited
	}
	return nil
}

// remove deletes a container, its task and its snapshot.
func remove(ctx context.Context, ctr ctd.Container) error {
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, ctd.WithProcessKill); err != nil {
			return fmt.Errorf("delete the task of %s: %w", ctr.ID(), err)
		}
	}
	if err := ctr.Delete(ctx, ctd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("delete container %s: %w", ctr.ID(), err)
	}
	return nil
}

// exitError describes how a task ended.
func exitError(st ctd.ExitStatus) error {
	if err := st.Error(); err != nil {
		return err
	}
	if st.ExitCode() > 128 {
		return fmt.Errorf("killed by signal %d", st.ExitCode()-128)
	}
	return fmt.Errorf("exit status %d", st.ExitCode())
}

// appendArgs adds args after the image's entrypoint and command.
func appendArgs(args ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Args = append(s.Process.Args, args...)
		return nil
	}
}

// prepareDataDir makes the relay's data folder, owned by the container's
// user when the relay runs in a container.
func prepareDataDir(dir string, container bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if container {
		if err := os.Chown(dir, containerUID, containerUID); err != nil {
			return fmt.Errorf("give the relay's volume to its user: %w", err)
		}
	}
	return nil
}
