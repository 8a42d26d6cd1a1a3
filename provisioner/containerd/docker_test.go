package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// dockerAPI calls Docker at socket and decodes the JSON answer into out,
// if not nil.
func dockerAPI(t *testing.T, socket, method, path string, body, out any) {
	t.Helper()
	d := newDocker(socket)
	defer d.close()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	// Not t.Context(): cleanups call it too.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// dockerImages returns the image IDs Docker lists, by name as Docker
// shows it (e.g. "edge/sleeper:1").
func dockerImages(t *testing.T, socket string) map[string]string {
	t.Helper()
	var list []struct {
		ID       string `json:"Id"`
		RepoTags []string
	}
	dockerAPI(t, socket, http.MethodGet, "/images/json", nil, &list)
	m := map[string]string{}
	for _, img := range list {
		for _, tag := range img.RepoTags {
			m[tag] = img.ID
		}
	}
	return m
}

// TestLoadDocker loads through Docker 20.10, whose classic image store
// does not see containerd's images (moby issue 47930).
func TestLoadDocker(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	dk := containerdtest.StartDocker(t, d)

	t.Run("DockerStoreInfo", func(t *testing.T) {
		info, err := DockerStoreInfo(t.Context(), dk.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if info.ContainerdStore || info.Driver != "overlay2" || !strings.HasPrefix(info.Version, "20.10") {
			t.Errorf("DockerStoreInfo = %+v, want Docker 20.10 with the classic store on overlay2", info)
		}
	})

	dir := t.TempDir()
	c, _ := newClient(t, d, WithDockerSocket(dk.Socket))
	plain, id := containerdtest.BuildImage(t, dir, "edge/sleeper:docker", containerdtest.DockerArchive, false)
	gz, _ := containerdtest.BuildImage(t, dir, "edge/sleeper:docker", containerdtest.DockerArchive, true)
	for _, tc := range []struct {
		name, path string
		skipped    bool
	}{
		{"load", plain, false},
		{"reload", plain, true},
		{"reload gzip", gz, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Load(t.Context(), tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if res.Via != ViaDocker || !strings.Contains(res.Reason, "classic image store (overlay2)") {
				t.Errorf("Load(%s) went via %s because %q, want docker because of its classic store", tc.path, res.Via, res.Reason)
			}
			want := []Image{{Name: "docker.io/edge/sleeper:docker", Digest: id, Skipped: tc.skipped}}
			if !slices.Equal(res.Images, want) {
				t.Errorf("Load(%s).Images = %+v, want %+v", tc.path, res.Images, want)
			}
			if got := dockerImages(t, dk.Socket)["edge/sleeper:docker"]; got != id {
				t.Errorf("Docker lists edge/sleeper:docker as %q, want %s", got, id)
			}
			// Docker's classic store keeps the image to itself.
			if imgs := storeImages(t, d, DefaultNamespace); len(imgs) != 0 {
				t.Errorf("containerd namespace moby has %d images, want none", len(imgs))
			}
		})
	}

	t.Run("OCI layout", func(t *testing.T) {
		path, _ := containerdtest.BuildImage(t, dir, "edge/sleeper:oci", containerdtest.OCILayout, false)
		res, err := c.Load(t.Context(), path)
		if err == nil || !strings.Contains(err.Error(), "cannot load an OCI image layout that lacks manifest.json") {
			t.Fatalf("Load(OCI layout) via Docker 20.10 = %+v, %v; want it refused", res, err)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		old := containerdtest.NewImage(t, map[string][]byte{"old": []byte("old")}, "/old")
		first := filepath.Join(t.TempDir(), "first.tar")
		containerdtest.WriteArchive(t, first, containerdtest.DockerArchive, false, containerdtest.Entry{Ref: "edge/first:1", Image: old})
		if _, err := c.Load(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		before := dockerImages(t, dk.Socket)

		both := filepath.Join(t.TempDir(), "both.tar")
		containerdtest.WriteArchive(t, both, containerdtest.DockerArchive, false,
			containerdtest.Entry{Ref: "edge/first:1", Image: containerdtest.Sleeper(t)},
			containerdtest.Entry{Ref: "edge/broken:1", Image: brokenImage(t)})
		res, err := c.Load(t.Context(), both)
		if err == nil || !strings.Contains(err.Error(), "Docker: ") {
			t.Fatalf("Load(broken image) via Docker = %+v, %v; want Docker's error", res, err)
		}
		if after := dockerImages(t, dk.Socket); !maps.Equal(after, before) {
			t.Errorf("Docker's images before the failed Load: %v\nafter: %v", before, after)
		}
	})
}

// TestLoadDockerContainerdStore routes a load past a Docker that uses the
// containerd image store. Docker 24+ cannot be installed here, so a fake
// Docker answers GET /info as Docker 27 does with the containerd-snapshotter
// feature on, and the images go into the real containerd, namespace moby,
// unpacked into the snapshotter Docker names.
func TestLoadDockerContainerdStore(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	socket := fakeDocker(t, `{"ServerVersion":"27.3.1","Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}`)

	info, err := DockerStoreInfo(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	if want := (DockerInfo{Version: "27.3.1", Driver: "overlayfs", ContainerdStore: true}); *info != want {
		t.Errorf("DockerStoreInfo = %+v, want %+v", *info, want)
	}

	c, _ := newClient(t, d, WithDockerSocket(socket))
	path, id := containerdtest.BuildImage(t, t.TempDir(), "edge/sleeper:ctd", containerdtest.DockerArchive, true)
	res, err := c.Load(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != ViaContainerd || res.Reason != "Docker 27.3.1 uses the containerd image store (overlayfs)" {
		t.Errorf("Load went via %s because %q, want containerd because of Docker's containerd store", res.Via, res.Reason)
	}
	img, ok := storeImages(t, d, DefaultNamespace)["docker.io/edge/sleeper:ctd"]
	if !ok {
		t.Fatal("docker.io/edge/sleeper:ctd is not in namespace moby")
	}
	if config, unpacked := imageState(t, d, DefaultNamespace, img); config != id || !unpacked {
		t.Errorf("image: config %s, unpacked %v; want config %s, unpacked into overlayfs", config, unpacked, id)
	}
}

// fakeDocker serves info as GET /info on a new unix socket.
func fakeDocker(t *testing.T, info string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "d.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(info))
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return socket
}

func TestParseInfo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status [][]string
		want   bool
	}{
		{"classic", [][]string{{"Backing Filesystem", "extfs"}, {"Supports d_type", "true"}}, false},
		{"containerd", [][]string{{"driver-type", "io.containerd.snapshotter.v1"}}, true},
		{"other driver type", [][]string{{"driver-type", "something"}}, false},
		{"short entry", [][]string{{"driver-type"}}, false},
	} {
		if got := parseInfo("27.0.0", "x", tc.status).ContainerdStore; got != tc.want {
			t.Errorf("%s: parseInfo(%q).ContainerdStore = %v, want %v", tc.name, tc.status, got, tc.want)
		}
	}
}
