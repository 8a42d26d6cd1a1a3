package containerd

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// TestContainers runs edgeAgent and edgeHub as IoT Edge does, through
// containerd and runc, next to a module container without a task and a
// container that is no module.
func TestContainers(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	c, _ := newClient(t, d, WithDockerSocket(""))
	path, _ := containerdtest.BuildImage(t, t.TempDir(), "edge/sleeper:health", containerdtest.DockerArchive, false)
	if _, err := c.Load(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	const image = "docker.io/edge/sleeper:health"
	containerdtest.RunModule(t, d, DefaultNamespace, image, "$edgeAgent")
	containerdtest.RunModule(t, d, DefaultNamespace, image, "$edgeHub")
	createContainer(t, d, image, "custom", "IOTEDGE_MODULEID=custom")
	createContainer(t, d, image, "other", "OTHER=1")

	list, err := c.WaitRunning(t.Context(), []string{"edgeAgent", "edgeHub"}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ct := range list {
		got = append(got, ct.Module+"="+ct.State)
		if ct.Image != image || ct.State == "running" && ct.PID == 0 {
			t.Errorf("container %+v, want image %s and a PID when running", ct, image)
		}
	}
	if want := "custom=no task edgeAgent=running edgeHub=running"; strings.Join(got, " ") != want {
		t.Errorf("Containers = %q, want %q", got, want)
	}

	t.Run("not healthy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // under -race on a loaded CI machine one listing took over 3 s
		defer cancel()
		list, err := c.WaitRunning(ctx, []string{"edgeHub", "custom", "relay"}, 50*time.Millisecond)
		if !errors.Is(err, ErrNotHealthy) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitRunning = %v, want ErrNotHealthy after the deadline", err)
		}
		// Where it looked, for an operator whose runtime uses another
		// socket or namespace.
		for _, s := range []string{"custom: no task", "relay: no container", "namespace " + c.ns, c.address} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("WaitRunning = %v, want it to say %q", err, s)
			}
		}
		if strings.Contains(err.Error(), "edgeHub") || len(list) != 3 {
			t.Errorf("WaitRunning = %d containers, %v; want the 3 edge containers and edgeHub healthy", len(list), err)
		}
	})
}

// createContainer creates a container without a task, with env.
func createContainer(t *testing.T, d *containerdtest.Daemon, image, id string, env ...string) {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), DefaultNamespace)
	client, err := containerd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	img, err := client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithEnv(env)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctr.Delete(namespaces.WithNamespace(context.Background(), DefaultNamespace), containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
	})
}

// TestContainersDocker runs edgeHub as IoT Edge really does: docker
// create with IOTEDGE_MODULEID=$edgeHub, then start. Docker runs it in
// containerd's namespace moby without labels; the environment in its spec
// tells the module.
func TestContainersDocker(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	dk := containerdtest.StartDocker(t, d)
	c, _ := newClient(t, d, WithDockerSocket(dk.Socket))
	path, _ := containerdtest.BuildImage(t, t.TempDir(), "edge/sleeper:hub", containerdtest.DockerArchive, false)
	if _, err := c.Load(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID string `json:"Id"`
	}
	dockerAPI(t, dk.Socket, http.MethodPost, "/containers/create?name=edgeHub", map[string]any{
		"Image":      "edge/sleeper:hub",
		"Env":        []string{"IOTEDGE_MODULEID=$edgeHub"},
		"HostConfig": map[string]any{"NetworkMode": "none"},
	}, &created)
	t.Cleanup(func() {
		dockerAPI(t, dk.Socket, http.MethodDelete, "/containers/"+created.ID+"?force=1", nil, nil)
	})
	dockerAPI(t, dk.Socket, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	list, err := c.WaitRunning(ctx, []string{"edgeHub"}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != created.ID || list[0].Module != "edgeHub" || list[0].State != "running" || list[0].PID == 0 {
		t.Errorf("Containers = %+v, want Docker's container %s as edgeHub, running", list, created.ID)
	}
}
