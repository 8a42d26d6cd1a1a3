package image_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgetpm/edgetpm/deploy/image"
	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/provisioner/containerd"
)

const (
	ref = "edgetpm/edge-relay:test"
	// fullRef is ref as containerd names it.
	fullRef = "docker.io/edgetpm/edge-relay:test"
	// maxSize bounds one platform's image, compressed.
	maxSize = 20 << 20
)

var (
	created   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	platforms = []string{"linux/amd64", "linux/arm64"}
	machines  = map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}
)

// TestBuild builds edge-relay for two platforms twice, into different
// folders, then checks the archives: identical, as specified, and loadable
// into a real containerd that runs them.
func TestBuild(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	opts := image.Options{Dir: root, Platforms: platforms, Name: ref, Version: "1.2.3", Revision: "0123abc", Created: created}
	build := func(out string) *image.Result {
		t.Helper()
		opts.Out = out
		start := time.Now()
		res, err := image.Build(t.Context(), opts)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		t.Logf("built in %v", time.Since(start).Round(time.Millisecond))
		return res
	}
	// The second folder holds an archive of an earlier build, for another
	// platform: it must go, or 'image load dist/*.tar' would load it.
	again := t.TempDir()
	if err := os.WriteFile(filepath.Join(again, "edge-relay-linux-s390x.docker.tar"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	first, second := build(t.TempDir()), build(again)

	t.Run("Reproducible", func(t *testing.T) {
		if first.Index != second.Index {
			t.Errorf("index digests %s and %s differ", first.Index, second.Index)
		}
		a, b := sums(t, filepath.Dir(first.OCIArchive)), sums(t, filepath.Dir(second.OCIArchive))
		want := []string{"edge-relay-linux-amd64.docker.tar", "edge-relay-linux-arm64.docker.tar", "edge-relay.oci.tar"}
		if names := slices.Sorted(maps.Keys(a)); !slices.Equal(names, want) {
			t.Fatalf("Build wrote %q, want %q", names, want)
		}
		if names := slices.Sorted(maps.Keys(b)); !slices.Equal(names, want) {
			t.Fatalf("the second build left %q, want %q", names, want)
		}
		for name, sum := range a {
			if b[name] != sum {
				t.Errorf("%s differs between builds: sha256 %s and %s", name, sum, b[name])
			}
		}
		if len(first.Images) != len(platforms) {
			t.Fatalf("Build returned %d images, want %d", len(first.Images), len(platforms))
		}
		for i, img := range first.Images {
			t.Logf("%s: %.2f MB compressed, manifest %s", img.Platform, float64(img.Size)/1e6, img.Manifest)
			if img.Platform != platforms[i] || filepath.Base(img.DockerArchive) != "edge-relay-"+strings.ReplaceAll(platforms[i], "/", "-")+".docker.tar" {
				t.Errorf("image %d is %s in %s, want %s", i, img.Platform, img.DockerArchive, platforms[i])
			}
			if img != (image.Image{Platform: img.Platform, Manifest: second.Images[i].Manifest, Config: second.Images[i].Config, Size: second.Images[i].Size, DockerArchive: img.DockerArchive}) {
				t.Errorf("%s: builds differ: %+v and %+v", img.Platform, img, second.Images[i])
			}
			if img.Size <= 0 || img.Size > maxSize {
				t.Errorf("%s: image is %d bytes compressed, want at most %d", img.Platform, img.Size, maxSize)
			}
		}
		t.Logf("index %s", first.Index)
	})

	t.Run("Config", func(t *testing.T) {
		dir := untar(t, first.OCIArchive)
		p, err := layout.FromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		top, err := p.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		im, err := top.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 {
			t.Fatalf("index.json lists %d entries, want the multi-platform index alone", len(im.Manifests))
		}
		d := im.Manifests[0]
		if d.Digest != first.Index || d.MediaType != types.OCIImageIndex || d.Annotations["org.opencontainers.image.ref.name"] != fullRef {
			t.Errorf("index.json lists %s (%s, %v), want index %s named %s", d.Digest, d.MediaType, d.Annotations, first.Index, fullRef)
		}
		idx, err := top.ImageIndex(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		manifests, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(manifests.Manifests) != len(platforms) {
			t.Fatalf("index lists %d manifests, want %d", len(manifests.Manifests), len(platforms))
		}
		for i, m := range manifests.Manifests {
			want, _ := image.ParsePlatform(platforms[i])
			if m.Platform == nil || m.Platform.String() != platforms[i] || m.Digest != first.Images[i].Manifest {
				t.Errorf("index entry %d is %s for %v, want %s for %s", i, m.Digest, m.Platform, first.Images[i].Manifest, platforms[i])
			}
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkConfig(t, img, want)
			checkLayer(t, img, platforms[i])
		}
	})

	t.Run("Containerd", func(t *testing.T) {
		host := "linux/" + runtime.GOARCH
		i := slices.Index(platforms, host)
		if i < 0 {
			t.Skipf("no image built for this host, %s", host)
		}
		d := containerdtest.Start(t)
		for _, tc := range []struct{ name, path, digest string }{
			{"docker-archive", first.Images[i].DockerArchive, ""},
			{"oci-layout", first.OCIArchive, first.Index.String()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ns := "image-" + tc.name
				c, err := containerd.New(t.Context(), d.Address, containerd.WithNamespace(ns), containerd.WithDockerSocket(""))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				res, err := c.Load(t.Context(), tc.path)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Images) != 1 || res.Images[0].Name != fullRef || tc.digest != "" && res.Images[0].Digest != tc.digest {
					t.Fatalf("Load(%s).Images = %+v, want %s at %q", tc.path, res.Images, fullRef, tc.digest)
				}
				code, out := runOnce(t, d, ns, fullRef, "/edge-relay", "--help")
				if code != 0 || !strings.Contains(out, "usage: edge-relay") {
					t.Errorf("edge-relay --help in the container: exit %d, output:\n%s", code, out)
				}
				// Nothing serves /healthz: the HEALTHCHECK command runs and
				// says why it fails.
				code, out = runOnce(t, d, ns, fullRef, "/edge-relay", "health")
				if code != 1 || !strings.Contains(out, "127.0.0.1:9600/healthz") {
					t.Errorf("edge-relay health in the container: exit %d, output:\n%s", code, out)
				}
			})
		}
	})
}

// checkConfig checks the config of img, built for p.
func checkConfig(t *testing.T, img v1.Image, p v1.Platform) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant || !cf.Created.Equal(created) {
		t.Errorf("config is for %s/%s/%s of %v, want %s of %v", cf.OS, cf.Architecture, cf.Variant, cf.Created, p.String(), created)
	}
	want := v1.Config{
		User:         "65532:65532",
		Entrypoint:   []string{"/edge-relay"},
		WorkingDir:   "/",
		Env:          []string{"EDGE_RELAY_DATA=/data"},
		Volumes:      map[string]struct{}{"/data": {}},
		ExposedPorts: map[string]struct{}{"9600/tcp": {}},
		Healthcheck: &v1.HealthConfig{
			Test:     []string{"CMD", "/edge-relay", "health"},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, StartPeriod: 10 * time.Second, Retries: 3,
		},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "edge-relay",
			"org.opencontainers.image.description": cf.Config.Labels["org.opencontainers.image.description"],
			"org.opencontainers.image.source":      "https://github.com/edgetpm/edgetpm",
			"org.opencontainers.image.version":     "1.2.3",
			"org.opencontainers.image.revision":    "0123abc",
			"org.opencontainers.image.licenses":    "MIT",
			"org.opencontainers.image.created":     "2026-01-02T03:04:05Z",
		},
	}
	if !reflect.DeepEqual(cf.Config, want) || want.Labels["org.opencontainers.image.description"] == "" {
		t.Errorf("config of %s = %+v, want %+v", p.String(), cf.Config, want)
	}
}

// checkLayer checks the only layer of img: /data for the user, and a
// static binary for platform, owned by root; all of time created.
func checkLayer(t *testing.T, img v1.Image, platform string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%s: %d layers, want 1", platform, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		Name       string
		Type       byte
		Mode       int64
		UID, GID   int
		ModTime    time.Time
		PAXRecords map[string]string
	}
	var got []entry
	var bin []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.UTC(), h.PAXRecords})
		if h.Name == "edge-relay" {
			if bin, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []entry{
		{"data/", tar.TypeDir, 0o700, 65532, 65532, created, nil},
		{"edge-relay", tar.TypeReg, 0o755, 0, 0, created, nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: layer holds %+v, want %+v", platform, got, want)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: /edge-relay: %v", platform, err)
	}
	if f.Machine != machines[platform] {
		t.Errorf("%s: /edge-relay is for %v, want %v", platform, f.Machine, machines[platform])
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: /edge-relay is linked dynamically", platform)
		}
	}
}

// sums returns the sha256 of every file in dir, by name.
func sums(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		m[e.Name()] = hex.EncodeToString(s[:])
	}
	return m
}

// untar extracts the OCI archive at path into a new folder, checking that
// its entries are sorted files owned by root, all of time created.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) || h.PAXRecords != nil {
			t.Errorf("%s: entry %s: type %c, owner %d:%d, time %v, PAX %v; want a file of root's of %v", path, h.Name, h.Typeflag, h.Uid, h.Gid, h.ModTime, h.PAXRecords, created)
		}
		names = append(names, h.Name)
		dst := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "index.json") || !slices.Contains(names, "oci-layout") {
		t.Errorf("%s holds %q, want sorted names with index.json and oci-layout", path, names)
	}
	return dir
}

// runOnce runs args in a new container from image ref, in namespace ns of
// d, until it exits, and returns its exit status and output. It removes
// the container and its snapshot before it returns.
func runOnce(t *testing.T, d *containerdtest.Daemon, ns, ref string, args ...string) (int, string) {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	client, err := ctd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	// runc keeps the containers of every containerd on the host together.
	id := "edge-relay-test-" + strings.ToLower(rand.Text()[:10])
	ctr, err := client.NewContainer(ctx, id,
		ctd.WithImage(img),
		ctd.WithNewSnapshot(id, img),
		ctd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ctr.Delete(namespaces.WithNamespace(t.Context(), ns), ctd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
	}()
	// The output comes through FIFOs that this process copies, so that it
	// is all here once the copy ends (a shim writing a log file itself
	// could lose a short-lived process's stderr: "error copying stderr").
	var out syncbuf.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		t.Fatal(err)
	}
	deleted := false
	defer func() {
		if deleted {
			return
		}
		if _, err := task.Delete(namespaces.WithNamespace(t.Context(), ns), ctd.WithProcessKill); err != nil {
			t.Errorf("delete task %s: %v", id, err)
		}
	}()
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var status ctd.ExitStatus
	select {
	case status = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%q in container %s did not exit", args, id)
	}
	if err := status.Error(); err != nil {
		t.Fatal(err)
	}
	task.IO().Wait()
	deleted = true
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task %s: %v", id, err)
	}
	return int(status.ExitCode()), out.String()
}
