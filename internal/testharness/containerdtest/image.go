package containerdtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
)

// The archive formats, as containerd.LoadResult names them.
const (
	DockerArchive = "docker-archive"
	OCILayout     = "oci-layout"
)

// epoch is the time of every file and image, so that archives are
// reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one image of an archive; Ref is its name, "" for none.
type Entry struct {
	Ref   string
	Image v1.Image
}

// BuildImage writes the Sleeper image, named ref, to a new archive in dir
// in format (DockerArchive or OCILayout), gzipped if gz, and returns the
// archive's path and the image ID (the config digest), which is the same
// in both formats.
func BuildImage(t testing.TB, dir, ref, format string, gz bool) (path, digest string) {
	t.Helper()
	img := Sleeper(t)
	name := strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(ref) + "." + format + ".tar"
	if gz {
		name += ".gz"
	}
	path = filepath.Join(dir, name)
	WriteArchive(t, path, format, gz, Entry{Ref: ref, Image: img})
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return path, id.String()
}

var sleeper struct {
	once sync.Once
	img  v1.Image
	err  error
}

// Sleeper returns the test image for this host's platform: one layer
// holding /sleeper (testdata/sleeper), a static binary that prints its
// arguments and IOTEDGE_MODULEID and sleeps until SIGTERM. It is built
// once per test process.
func Sleeper(t testing.TB) v1.Image {
	t.Helper()
	goCmd := peertest.Need(t, "go")
	sleeper.once.Do(func() {
		bin, err := buildSleeper(goCmd)
		if err != nil {
			sleeper.err = fmt.Errorf("build the sleeper: %w", err)
			return
		}
		sleeper.img, sleeper.err = newImage(map[string][]byte{"sleeper": bin}, "/sleeper")
	})
	if sleeper.err != nil {
		t.Fatal(sleeper.err)
	}
	return sleeper.img
}

func buildSleeper(goCmd string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "sleeper")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "sleeper")
	// By import path, so that it builds from any package's test.
	cmd := exec.Command(goCmd, "build", "-trimpath", "-ldflags=-s -w", "-o", bin,
		"github.com/edgetpm/edgetpm/internal/testharness/containerdtest/testdata/sleeper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v\n%s", err, out)
	}
	return os.ReadFile(bin)
}

// NewImage returns a reproducible image for this host's platform, with OCI
// media types and one gzip layer that holds files (mode 0755) at the root,
// which runs entrypoint.
func NewImage(t testing.TB, files map[string][]byte, entrypoint ...string) v1.Image {
	t.Helper()
	img, err := newImage(files, entrypoint...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newImage(files map[string][]byte, entrypoint ...string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{Name: name, Mode: 0o755, Size: int64(len(files[name])), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// Compressed once here, at the fastest level: the race detector makes
	// the default level a hundred times slower, and ggcr would compress
	// an uncompressed layer again on every read.
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(buf.Bytes())
	zw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "containerdtest"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cf)
}

// WriteArchive writes entries to a new archive at path, in format, gzipped
// if gz. A docker-archive is laid out as docker save does, with
// uncompressed layers; an OCI layout names each image as Docker 25 does,
// with the full name in io.containerd.image.name and the tag in
// org.opencontainers.image.ref.name.
func WriteArchive(t testing.TB, path, format string, gz bool, entries ...Entry) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw, _ = gzip.NewWriterLevel(f, gzip.BestSpeed)
		w = zw
	}
	tw := tar.NewWriter(w)
	switch format {
	case DockerArchive:
		writeDockerArchive(t, tw, entries)
	case OCILayout:
		writeOCILayout(t, tw, entries)
	default:
		t.Fatalf("WriteArchive: unknown format %q", format)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Tar returns a tar of files, for archives that WriteArchive does not
// make; a content "symlink:target" makes a link.
func Tar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}
		if target, ok := strings.CutPrefix(files[name], "symlink:"); ok {
			hdr = &tar.Header{Name: name, Mode: 0o777, Linkname: target, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(files[name])); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, tw *tar.Writer, name string, b []byte) {
	t.Helper()
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(b); err != nil {
		t.Fatal(err)
	}
}

func writeDockerArchive(t testing.TB, tw *tar.Writer, entries []Entry) {
	t.Helper()
	type item struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []item
	written := map[string]bool{}
	add := func(name string, b func() []byte) {
		if !written[name] {
			written[name] = true
			writeFile(t, tw, name, b())
		}
	}
	for _, e := range entries {
		id, err := e.Image.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		it := item{Config: id.Hex + ".json"}
		if e.Ref != "" {
			it.RepoTags = []string{e.Ref}
		}
		add(it.Config, func() []byte { return must(t, e.Image.RawConfigFile) })
		layers, err := e.Image.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			diffID, err := l.DiffID()
			if err != nil {
				t.Fatal(err)
			}
			name := diffID.Hex + "/layer.tar"
			add(name, func() []byte {
				rc := must(t, l.Uncompressed)
				defer rc.Close()
				return must(t, func() ([]byte, error) { return io.ReadAll(rc) })
			})
			it.Layers = append(it.Layers, name)
		}
		manifest = append(manifest, it)
	}
	writeFile(t, tw, "manifest.json", must(t, func() ([]byte, error) { return json.Marshal(manifest) }))
}

func writeOCILayout(t testing.TB, tw *tar.Writer, entries []Entry) {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var opts []layout.Option
		if e.Ref != "" {
			ref, err := reference.ParseDockerRef(e.Ref)
			if err != nil {
				t.Fatal(err)
			}
			tag := "latest"
			if tagged, ok := ref.(reference.Tagged); ok {
				tag = tagged.Tag()
			}
			opts = append(opts, layout.WithAnnotations(map[string]string{
				"io.containerd.image.name":          ref.String(),
				"org.opencontainers.image.ref.name": tag,
			}))
		}
		if err := p.AppendImage(e.Image, opts...); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			names = append(names, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	for _, name := range names {
		rel, _ := filepath.Rel(dir, name)
		writeFile(t, tw, filepath.ToSlash(rel), must(t, func() ([]byte, error) { return os.ReadFile(name) }))
	}
}

func must[T any](t testing.TB, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
