package containerd

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// TestLoad loads every format into a real containerd, without Docker, then
// loads it again.
func TestLoad(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	for _, format := range []string{containerdtest.DockerArchive, containerdtest.OCILayout} {
		for _, gz := range []bool{false, true} {
			name := format
			if gz {
				name += "+gzip"
			}
			t.Run(name, func(t *testing.T) {
				ns := "load-" + strings.ReplaceAll(name, "+", "-")
				ref := "edge/sleeper:" + strings.ReplaceAll(name, "+", "-")
				want := "docker.io/" + ref
				path, id := containerdtest.BuildImage(t, t.TempDir(), ref, format, gz)
				c, logs := newClient(t, d, WithNamespace(ns), WithDockerSocket(""))

				res, err := c.Load(t.Context(), path)
				if err != nil {
					t.Fatal(err)
				}
				if res.Path != path || res.Format != format || res.Compressed != gz || res.Via != ViaContainerd || res.Reason == "" || res.Bytes == 0 {
					t.Errorf("Load(%s) = %+v", path, res)
				}
				if len(res.Images) != 1 || res.Images[0].Name != want || res.Images[0].Skipped {
					t.Fatalf("Load(%s).Images = %+v, want one new %s", path, res.Images, want)
				}
				img, ok := storeImages(t, d, ns)[want]
				if !ok {
					t.Fatalf("%s is not in namespace %s", want, ns)
				}
				if got := img.Target.Digest.String(); got != res.Images[0].Digest {
					t.Errorf("store has %s at %s, Load reported %s", want, got, res.Images[0].Digest)
				}
				if format == containerdtest.OCILayout {
					m, _ := containerdtest.Sleeper(t).Digest()
					if got := img.Target.Digest.String(); got != m.String() {
						t.Errorf("store has %s at %s, want the archive's manifest %s", want, got, m)
					}
				}
				if config, unpacked := imageState(t, d, ns, img); config != id || !unpacked {
					t.Errorf("image %s: config %s, unpacked %v; want config %s, unpacked", want, config, unpacked, id)
				}
				msgs := logs.messages()
				for _, m := range []string{"reading archive", "verified", "importing", "unpacking", "loaded"} {
					if !slices.Contains(msgs, m) {
						t.Errorf("no %q in the log: %q", m, msgs)
					}
				}

				again, err := c.Load(t.Context(), path)
				if err != nil {
					t.Fatal(err)
				}
				if len(again.Images) != 1 || !again.Images[0].Skipped || again.Images[0].Digest != res.Images[0].Digest {
					t.Errorf("second Load(%s).Images = %+v, want %s skipped", path, again.Images, want)
				}
			})
		}
	}
}

// TestLoadUnnamed loads images without a name: they keep the name Docker's
// containerd image store gives such images, so that it shows them and
// containerd does not collect them.
func TestLoadUnnamed(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	for _, format := range []string{containerdtest.DockerArchive, containerdtest.OCILayout} {
		t.Run(format, func(t *testing.T) {
			ns := "unnamed-" + format
			path := filepath.Join(t.TempDir(), "unnamed.tar")
			containerdtest.WriteArchive(t, path, format, false, containerdtest.Entry{Image: containerdtest.Sleeper(t)})
			c, _ := newClient(t, d, WithNamespace(ns), WithDockerSocket(""))
			res, err := c.Load(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Images) != 1 || res.Images[0].Name != "moby-dangling@"+res.Images[0].Digest {
				t.Fatalf("Load(unnamed).Images = %+v, want one moby-dangling@<digest>", res.Images)
			}
			img, ok := storeImages(t, d, ns)[res.Images[0].Name]
			if !ok {
				t.Fatalf("%s is not in the store", res.Images[0].Name)
			}
			if _, unpacked := imageState(t, d, ns, img); !unpacked {
				t.Errorf("%s is not unpacked", img.Name)
			}
		})
	}
}

// TestLoadCorrupt loads broken archives: each fails naming what is wrong,
// and the store keeps no image.
func TestLoadCorrupt(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	dir := t.TempDir()
	docker, _ := containerdtest.BuildImage(t, dir, "edge/corrupt:1", containerdtest.DockerArchive, false)
	dockerGz, _ := containerdtest.BuildImage(t, dir, "edge/corrupt:1", containerdtest.DockerArchive, true)
	oci, _ := containerdtest.BuildImage(t, dir, "edge/corrupt:1", containerdtest.OCILayout, false)
	ociGz, _ := containerdtest.BuildImage(t, dir, "edge/corrupt:1", containerdtest.OCILayout, true)

	// Each case makes a broken archive from a sound one and says what the
	// error must contain.
	flip := func(src, suffix string) func(t *testing.T, dst string) string {
		return func(t *testing.T, dst string) string {
			edit, file := flipLargest(t, src, suffix)
			rewrite(t, src, dst, edit)
			return file + " is corrupt"
		}
	}
	truncate := func(src string) func(t *testing.T, dst string) string {
		return func(t *testing.T, dst string) string {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b[:len(b)*2/3], 0o600); err != nil {
				t.Fatal(err)
			}
			return "unexpected EOF"
		}
	}
	write := func(b []byte, want string) func(t *testing.T, dst string) string {
		return func(t *testing.T, dst string) string {
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return want
		}
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dst string) string
	}{
		{"docker-archive/layer bit flip", flip(docker, "layer.tar")},
		{"docker-archive+gzip/layer bit flip", flip(dockerGz, "layer.tar")},
		{"docker-archive/config edited", func(t *testing.T, dst string) string {
			var file string
			rewrite(t, docker, dst, func(name string, b []byte) []byte {
				if strings.HasSuffix(name, ".json") && name != "manifest.json" {
					file = name
					return []byte(strings.Replace(string(b), `"linux"`, `"linuX"`, 1))
				}
				return b
			})
			return file + " is corrupt"
		}},
		{"docker-archive/truncated", truncate(docker)},
		{"docker-archive+gzip/truncated", truncate(dockerGz)},
		{"oci-layout/layer bit flip", flip(oci, "")},
		{"oci-layout+gzip/layer bit flip", flip(ociGz, "")},
		{"oci-layout/truncated", truncate(oci)},
		{"oci-layout+gzip/gzip bit flip", func(t *testing.T, dst string) string {
			b, err := os.ReadFile(ociGz)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x01
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return "" // a gzip or flate error, or a blob that is corrupt
		}},
		{"garbage", write([]byte(rand.Text()+rand.Text()+strings.Repeat("x", 4096)), "read archive")},
		{"empty", write(nil, "not an image archive")},
		{"other tar", write(containerdtest.Tar(t, map[string]string{"index.json": "{}", "hello.txt": "hi"}), "not an image archive")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := "corrupt"
			path := filepath.Join(t.TempDir(), "broken.tar")
			want := tc.make(t, path)
			c, _ := newClient(t, d, WithNamespace(ns), WithDockerSocket(""))
			res, err := c.Load(t.Context(), path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", tc.name, res)
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Load(%s) = %v, want an error naming %s and containing %q", tc.name, err, path, want)
			}
			if imgs := storeImages(t, d, ns); len(imgs) != 0 {
				t.Errorf("after Load(%s) namespace %s has %v", tc.name, ns, slices.Collect(maps.Keys(imgs)))
			}
		})
	}
}

// TestLoadRollback loads archives of two images whose second cannot be
// unpacked though its digests are sound: Load fails and leaves the names
// as they were, the first one back on its old image.
func TestLoadRollback(t *testing.T) {
	t.Parallel()
	d := containerdtest.Start(t)
	old := containerdtest.NewImage(t, map[string][]byte{"old": []byte("old")}, "/old")
	broken := brokenImage(t)
	for _, format := range []string{containerdtest.DockerArchive, containerdtest.OCILayout} {
		t.Run(format, func(t *testing.T) {
			ns := "rollback-" + format
			c, _ := newClient(t, d, WithNamespace(ns), WithDockerSocket(""))
			dir := t.TempDir()
			first := filepath.Join(dir, "first.tar")
			containerdtest.WriteArchive(t, first, format, false, containerdtest.Entry{Ref: "edge/first:1", Image: old})
			if _, err := c.Load(t.Context(), first); err != nil {
				t.Fatal(err)
			}
			before := storeImages(t, d, ns)

			both := filepath.Join(dir, "both.tar")
			containerdtest.WriteArchive(t, both, format, false,
				containerdtest.Entry{Ref: "edge/first:1", Image: containerdtest.Sleeper(t)},
				containerdtest.Entry{Ref: "edge/broken:1", Image: broken})
			res, err := c.Load(t.Context(), both)
			if err == nil || !strings.Contains(err.Error(), "unpack docker.io/edge/broken:1") {
				t.Fatalf("Load(broken image) = %+v, %v; want an error naming docker.io/edge/broken:1", res, err)
			}
			after := storeImages(t, d, ns)
			if len(after) != len(before) || after["docker.io/edge/first:1"].Target.Digest != before["docker.io/edge/first:1"].Target.Digest {
				t.Errorf("images before the failed Load: %v\nafter: %v", before, after)
			}
		})
	}
}

// brokenImage returns an image whose digests are all sound but whose
// second layer cannot be applied: it hard-links a file that is not there.
func brokenImage(t *testing.T) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "link", Linkname: "missing", Typeflag: tar.TypeLink, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(containerdtest.NewImage(t, map[string][]byte{"a": []byte("a")}, "/a"), layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
