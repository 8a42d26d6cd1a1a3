package imagearchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// tinyImage is a small image for table and fuzz tests.
func tinyImage(t testing.TB) v1.Image {
	return containerdtest.NewImage(t, map[string][]byte{"hello": []byte("hello, edge\n")}, "/hello")
}

// archiveFiles writes entries in format and returns the archive's files.
func archiveFiles(t testing.TB, format string, entries ...containerdtest.Entry) map[string]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "a.tar")
	containerdtest.WriteArchive(t, path, format, false, entries...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return untar(t, b)
}

func untar(t testing.TB, b []byte) map[string]string {
	t.Helper()
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = string(b)
	}
}

// editJSON decodes files[name] into a T, lets edit change it and encodes
// it back.
func editJSON[T any](t testing.TB, files map[string]string, name string, edit func(*T)) {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(files[name]), &v); err != nil {
		t.Fatal(err)
	}
	edit(&v)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	files[name] = string(b)
}

// blobName returns the path of digest d in an OCI layout.
func blobName(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

func TestVerify(t *testing.T) {
	img := tinyImage(t)
	id, _ := img.ConfigName()
	manifest, _ := img.Digest()
	layers, _ := img.Layers()
	diffID, _ := layers[0].DiffID()
	layerDigest, _ := layers[0].Digest()
	docker := archiveFiles(t, containerdtest.DockerArchive, containerdtest.Entry{Ref: "edge/tiny:1", Image: img})
	oci := archiveFiles(t, containerdtest.OCILayout, containerdtest.Entry{Ref: "edge/tiny:1", Image: img})
	layerFile := diffID.Hex + "/layer.tar"
	configFile := id.Hex + ".json"

	// An image of another platform, for indexes.
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = map[string]string{"arm64": "amd64"}[runtime.GOARCH]
	if cf.Architecture == "" {
		cf.Architecture = "arm64"
	}
	other, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	otherManifest, _ := other.Digest()
	otherRaw, _ := other.RawManifest()
	otherConfig, _ := other.ConfigName()

	var ggcr bytes.Buffer // ggcr's docker-archive: gzip layers named <digest>.tar.gz
	if err := tarball.Write(name.MustParseReference("edge/ggcr:1"), img, &ggcr); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		files   func() map[string]string
		want    *Archive // Format, DockerManifest and Images
		wantErr string
	}{
		{
			name:  "docker-archive",
			files: func() map[string]string { return maps.Clone(docker) },
			want:  &Archive{Format: FormatDocker, DockerManifest: true, Images: []Image{{Names: []string{"docker.io/edge/tiny:1"}, Config: id.String()}}},
		},
		{
			name:  "docker-archive of ggcr with gzip layers",
			files: func() map[string]string { return untar(t, ggcr.Bytes()) },
			want:  &Archive{Format: FormatDocker, DockerManifest: true, Images: []Image{{Names: []string{"docker.io/edge/ggcr:1"}, Config: id.String()}}},
		},
		{
			name: "docker-archive with a linked layer and no name",
			files: func() map[string]string {
				f := maps.Clone(docker)
				editJSON(t, f, "manifest.json", func(m *[]map[string]any) {
					*m = append(*m, map[string]any{"Config": configFile, "Layers": []string{"other/layer.tar"}})
				})
				f["other/layer.tar"] = "symlink:../" + layerFile
				return f
			},
			want: &Archive{Format: FormatDocker, DockerManifest: true, Images: []Image{
				{Names: []string{"docker.io/edge/tiny:1"}, Config: id.String()},
				{Config: id.String()},
			}},
		},
		{
			name: "docker-archive dangling link",
			files: func() map[string]string {
				f := maps.Clone(docker)
				f["other/layer.tar"] = "symlink:../nothing/layer.tar"
				return f
			},
			wantErr: "link other/layer.tar points to nothing/layer.tar, which is not a file",
		},
		{
			name: "docker-archive layer edited",
			files: func() map[string]string {
				f := maps.Clone(docker)
				f[layerFile] = strings.Replace(f[layerFile], "hello, edge", "hello, EDGE", 1)
				return f
			},
			wantErr: "layer " + layerFile + " is corrupt: its content is sha256:",
		},
		{
			name: "docker-archive config renamed",
			files: func() map[string]string {
				f := maps.Clone(docker)
				editJSON(t, f, "manifest.json", func(m *[]map[string]any) { (*m)[0]["Config"] = manifest.Hex + ".json" })
				f[manifest.Hex+".json"] = f[configFile]
				return f
			},
			wantErr: manifest.Hex + ".json is corrupt",
		},
		{
			name: "docker-archive layer count",
			files: func() map[string]string {
				f := maps.Clone(docker)
				editJSON(t, f, "manifest.json", func(m *[]map[string]any) { (*m)[0]["Layers"] = []string{layerFile, layerFile} })
				return f
			},
			wantErr: "lists 1 layers, manifest.json 2",
		},
		{
			name: "docker-archive missing layer",
			files: func() map[string]string {
				f := maps.Clone(docker)
				delete(f, layerFile)
				return f
			},
			wantErr: `layer "` + layerFile + `" of manifest.json is missing`,
		},
		{
			name: "docker-archive bad name",
			files: func() map[string]string {
				f := maps.Clone(docker)
				editJSON(t, f, "manifest.json", func(m *[]map[string]any) { (*m)[0]["RepoTags"] = []string{"Edge/Tiny:1"} })
				return f
			},
			wantErr: `image name "Edge/Tiny:1"`,
		},
		{
			name:    "docker-archive without images",
			files:   func() map[string]string { return map[string]string{"manifest.json": "[]"} },
			wantErr: "manifest.json lists no images",
		},
		{
			name:  "oci-layout",
			files: func() map[string]string { return maps.Clone(oci) },
			want:  &Archive{Format: FormatOCI, Images: []Image{{Names: []string{"docker.io/edge/tiny:1"}, Digest: manifest.String(), Config: id.String()}}},
		},
		{
			name: "oci-layout of Docker 25 with manifest.json",
			files: func() map[string]string {
				f := maps.Clone(oci)
				f["manifest.json"] = docker["manifest.json"]
				return f
			},
			want: &Archive{Format: FormatOCI, DockerManifest: true, Images: []Image{{Names: []string{"docker.io/edge/tiny:1"}, Digest: manifest.String(), Config: id.String()}}},
		},
		{
			name: "oci-layout names",
			files: func() map[string]string {
				f := maps.Clone(oci)
				editJSON(t, f, "index.json", func(idx *ocispec.Index) {
					m := idx.Manifests[0]
					idx.Manifests = nil
					for _, a := range []map[string]string{
						{ocispec.AnnotationRefName: "edge/skopeo:2"},
						{ocispec.AnnotationRefName: "3.0"},
						nil,
					} {
						m.Annotations = a
						idx.Manifests = append(idx.Manifests, m)
					}
				})
				return f
			},
			want: &Archive{Format: FormatOCI, Images: []Image{
				{Names: []string{"docker.io/edge/skopeo:2"}, Digest: manifest.String(), Config: id.String()},
				{Digest: manifest.String(), Config: id.String()},
				{Digest: manifest.String(), Config: id.String()},
			}},
		},
		{
			name: "oci-layout multi-platform, other platform not saved",
			files: func() map[string]string {
				f := maps.Clone(oci)
				idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{
					{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(otherRaw), Size: int64(len(otherRaw)), Platform: &ocispec.Platform{OS: "linux", Architecture: cf.Architecture}},
					{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(manifest.String()), Size: int64(len(f[blobName(manifest.String())])), Platform: &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}},
				}}
				idx.SchemaVersion = 2
				b, _ := json.Marshal(idx)
				f[blobName(digest.FromBytes(b).String())] = string(b)
				editJSON(t, f, "index.json", func(i *ocispec.Index) {
					i.Manifests[0].MediaType, i.Manifests[0].Digest, i.Manifests[0].Size = ocispec.MediaTypeImageIndex, digest.FromBytes(b), int64(len(b))
				})
				return f
			},
			want: &Archive{Format: FormatOCI, Images: []Image{{Names: []string{"docker.io/edge/tiny:1"}, Config: id.String()}}},
		},
		{
			name: "oci-layout other platform only",
			files: func() map[string]string {
				f := maps.Clone(oci)
				f[blobName(otherManifest.String())] = string(otherRaw)
				raw, _ := other.RawConfigFile()
				f[blobName(otherConfig.String())] = string(raw)
				editJSON(t, f, "index.json", func(i *ocispec.Index) {
					i.Manifests[0].Digest, i.Manifests[0].Size = digest.Digest(otherManifest.String()), int64(len(otherRaw))
				})
				return f
			},
			want: &Archive{Format: FormatOCI, Images: []Image{{Names: []string{"docker.io/edge/tiny:1"}, Digest: otherManifest.String(), Config: otherConfig.String()}}},
		},
		{
			name: "oci-layout blob edited",
			files: func() map[string]string {
				f := maps.Clone(oci)
				f[blobName(id.String())] = strings.Replace(f[blobName(id.String())], "linux", "linuX", 1)
				return f
			},
			wantErr: blobName(id.String()) + " is corrupt: its content is sha256:",
		},
		{
			name: "oci-layout size",
			files: func() map[string]string {
				f := maps.Clone(oci)
				editJSON(t, f, "index.json", func(i *ocispec.Index) { i.Manifests[0].Size++ })
				return f
			},
			wantErr: "index.json: blob " + manifest.String() + " has",
		},
		{
			name: "oci-layout missing layer",
			files: func() map[string]string {
				f := maps.Clone(oci)
				delete(f, blobName(layerDigest.String()))
				return f
			},
			wantErr: manifest.String() + ": blob " + layerDigest.String() + " is missing",
		},
		{
			name: "oci-layout bad digest",
			files: func() map[string]string {
				f := maps.Clone(oci)
				editJSON(t, f, "index.json", func(i *ocispec.Index) { i.Manifests[0].Digest = "sha256:x" })
				return f
			},
			wantErr: `descriptor digest "sha256:x"`,
		},
		{
			name: "oci-layout version",
			files: func() map[string]string {
				f := maps.Clone(oci)
				f["oci-layout"] = `{"imageLayoutVersion":"2.0.0"}`
				return f
			},
			wantErr: `unsupported imageLayoutVersion "2.0.0"`,
		},
		{
			name: "oci-layout without index.json",
			files: func() map[string]string {
				f := maps.Clone(oci)
				delete(f, "index.json")
				return f
			},
			wantErr: "index.json is missing",
		},
		{
			name: "oci-layout stray blob",
			files: func() map[string]string {
				f := maps.Clone(oci)
				f["blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000"] = "x"
				return f
			},
			wantErr: "blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000 is corrupt",
		},
		{
			name:    "sparse",
			files:   func() map[string]string { return nil },
			wantErr: "manifest.json is a sparse file",
		},
		{
			name:    "neither",
			files:   func() map[string]string { return map[string]string{"index.json": "{}", "repositories": "{}"} },
			wantErr: "not an image archive",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := containerdtest.Tar(t, tc.files())
			if tc.name == "sparse" {
				b = sparseTar(t, "manifest.json")
			}
			got, err := Verify(t.Context(), bytes.NewReader(b), zerolog.Nop())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("verify = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("verify = %v", err)
			}
			if !equalArchive(got, tc.want) {
				t.Errorf("verify = %+v, want %+v", *got, *tc.want)
			}
		})
	}
}

// sparseTar returns a tar whose one entry, name, is a GNU sparse file
// (PAX format 1.0) of 8 GiB of holes: 2.5 KiB that read as 8 GiB of zeros.
func sparseTar(t *testing.T, name string) []byte {
	t.Helper()
	var records string
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", name}, {"GNU.sparse.realsize", "8589934592"}} {
		r := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(r) + len(strconv.Itoa(len(r)))
		n = len(r) + len(strconv.Itoa(n))
		records += strconv.Itoa(n) + r
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Go's writer makes no sparse files: write the PAX header as a file,
	// then make it one.
	for _, f := range []struct{ name, data string }{{"PaxHeaders/x", records}, {"GNUSparseFile.0/x", "0\n"}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Size: 512, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(append([]byte(f.data), make([]byte, 512-len(f.data))...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[156] = tar.TypeXHeader
	copy(b[124:136], fmt.Sprintf("%011o\x00", len(records)))
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// equalArchive compares all but Compressed.
func equalArchive(a, b *Archive) bool {
	if a.Format != b.Format || a.DockerManifest != b.DockerManifest || len(a.Images) != len(b.Images) {
		return false
	}
	for i := range a.Images {
		x, y := a.Images[i], b.Images[i]
		if strings.Join(x.Names, ",") != strings.Join(y.Names, ",") || x.Config != y.Config || (y.Digest != "" && x.Digest != y.Digest) {
			return false
		}
	}
	return true
}

var refNameTests = []struct{ in, want string }{
	{"1.0", ""},
	{"latest", ""},
	{"", ""},
	{"alpine:3.20", "docker.io/library/alpine:3.20"},
	{"mcr.microsoft.com/azureiotedge-agent:1.5", "mcr.microsoft.com/azureiotedge-agent:1.5"},
	{"localhost:5000/edge/relay", "localhost:5000/edge/relay:latest"},
	{"Bad/Name:1", ""},
}

func TestRefName(t *testing.T) {
	for _, tc := range refNameTests {
		if got := RefName(tc.in); got != tc.want {
			t.Errorf("RefName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRefName feeds RefName annotations, which come from the archive. A
// name it returns must be a full reference in its normal form, which
// RefName keeps as it is; a tag alone names nothing.
func FuzzRefName(f *testing.F) {
	for _, tc := range refNameTests {
		f.Add(tc.in)
	}
	f.Add("edge/relay@sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, in string) {
		got := RefName(in)
		if got == "" {
			return
		}
		if !strings.ContainsAny(in, "/:@") {
			t.Fatalf("RefName(%q) = %q, want a tag alone to name nothing", in, got)
		}
		ref, err := reference.ParseDockerRef(got)
		if err != nil || ref.String() != got {
			t.Fatalf("RefName(%q) = %q, which parses as %v, %v", in, got, ref, err)
		}
		if again := RefName(got); again != got {
			t.Fatalf("RefName(%q) = %q, but RefName(%q) = %q", in, got, got, again)
		}
	})
}

// FuzzVerify feeds verify archives made from sound ones. It must never
// panic, must pass only archives that name at least one image with a
// well-formed config digest, and must judge an archive the same plain and
// gzipped.
func FuzzVerify(f *testing.F) {
	img := tinyImage(f)
	for _, format := range []string{containerdtest.DockerArchive, containerdtest.OCILayout} {
		for _, gz := range []bool{false, true} {
			path := filepath.Join(f.TempDir(), "seed.tar")
			containerdtest.WriteArchive(f, path, format, gz, containerdtest.Entry{Ref: "edge/tiny:1", Image: img})
			b, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	var ggcr bytes.Buffer
	if err := tarball.Write(name.MustParseReference("edge/ggcr:1"), img, &ggcr); err != nil {
		f.Fatal(err)
	}
	f.Add(ggcr.Bytes())
	f.Add([]byte{})
	f.Add(gzipMagic)
	for _, b := range duplicateArchives(f) {
		f.Add(b)
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Verify(t.Context(), bytes.NewReader(b), zerolog.Nop())
		if err != nil {
			return
		}
		if a.Format != FormatDocker && a.Format != FormatOCI || len(a.Images) == 0 {
			t.Fatalf("verify passed %+v", *a)
		}
		if a.Compressed != bytes.HasPrefix(b, gzipMagic) {
			t.Fatalf("verify passed %+v, compressed %v; the archive starts %x", *a, a.Compressed, b[:min(len(b), 2)])
		}
		for _, img := range a.Images {
			if img.Config != "" && (len(img.Config) != len("sha256:")+64 || !strings.HasPrefix(img.Config, "sha256:")) {
				t.Fatalf("verify passed config %q", img.Config)
			}
		}
		if bytes.HasPrefix(b, gzipMagic) {
			return
		}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
		zw.Write(b)
		zw.Close()
		az, err := Verify(t.Context(), bytes.NewReader(z.Bytes()), zerolog.Nop())
		if err != nil || !equalArchive(az, a) || !az.Compressed {
			t.Fatalf("verify passed the plain archive as %+v, and the gzipped one as %+v, %v", *a, az, err)
		}
	})
}

// tarEntry is one entry of an ordered tar: a regular file, or a symbolic
// link when link is set.
type tarEntry struct{ name, data, link string }

func orderedTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.link != "" {
			hdr = &tar.Header{Name: e.name, Mode: 0o777, Linkname: e.link, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.link == "" {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// duplicateArchives are sound docker-archives with one name given twice:
// what Verify checks and what containerd imports could then differ.
func duplicateArchives(t testing.TB) map[string][]byte {
	img := tinyImage(t)
	id, _ := img.ConfigName()
	layers, _ := img.Layers()
	diffID, _ := layers[0].DiffID()
	docker := archiveFiles(t, containerdtest.DockerArchive, containerdtest.Entry{Ref: "edge/tiny:1", Image: img})
	layerFile := diffID.Hex + "/layer.tar"
	configFile := id.Hex + ".json"
	// Files the links below point to, with other content.
	docker["evil/layer.tar"], docker["evil.json"] = "evil", "{}"
	var sound []tarEntry
	for _, name := range slices.Sorted(maps.Keys(docker)) {
		sound = append(sound, tarEntry{name: name, data: docker[name]})
	}
	with := func(extra tarEntry, first bool) []byte {
		if first {
			return orderedTar(t, append([]tarEntry{extra}, sound...)...)
		}
		return orderedTar(t, append(slices.Clone(sound), extra)...)
	}
	return map[string][]byte{
		"symlink after a layer":    with(tarEntry{name: layerFile, link: "../evil/layer.tar"}, false),
		"symlink before a layer":   with(tarEntry{name: layerFile, link: "../evil/layer.tar"}, true),
		"symlink after the config": with(tarEntry{name: configFile, link: "evil.json"}, false),
		"two manifests":            with(tarEntry{name: "manifest.json", data: "[]"}, false),
		"two manifests, one ./":    with(tarEntry{name: "./manifest.json", data: "[]"}, true),
		"two layers":               with(tarEntry{name: layerFile, data: "evil"}, true),
		"two links":                orderedTar(t, append(slices.Clone(sound), tarEntry{name: "l", link: layerFile}, tarEntry{name: "l", link: configFile})...),
	}
}

// An archive that names a file twice is refused: containerd's importer and
// Verify might each read another of the two.
func TestVerifyRefusesDuplicateNames(t *testing.T) {
	for name, b := range duplicateArchives(t) {
		_, err := Verify(t.Context(), bytes.NewReader(b), zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), "more than once") {
			t.Errorf("%s: Verify = %v, want the name refused as given more than once", name, err)
		}
	}
}

// countingReader counts what is read through it and cancels a context
// once 8 KiB are read: Verify is then inside the first file.
type countingReader struct {
	r      io.Reader
	cancel context.CancelFunc
	n      int
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= 8<<10 {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Cancelling stops Verify while it un-gzips, whether the archive or a layer
// inside it: it reads at most a few buffers more.
func TestVerifyHonoursCancellationWhileGunzipping(t *testing.T) {
	// 64 MiB of zeros, gzipped to some 64 KiB.
	var layer bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&layer, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zeros)
	}
	zw.Close()
	inner := orderedTar(t, tarEntry{name: "blobs/sha256/layer", data: layer.String()})

	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	tw.WriteHeader(&tar.Header{Name: "blobs/sha256/big", Mode: 0o644, Size: 64 << 20, Typeflag: tar.TypeReg})
	for range 64 {
		tw.Write(zeros)
	}
	tw.Close()
	var outer bytes.Buffer
	zw, _ = gzip.NewWriterLevel(&outer, gzip.BestCompression)
	zw.Write(plain.Bytes())
	zw.Close()

	for name, b := range map[string][]byte{"gzip layer": inner, "gzip archive": outer.Bytes()} {
		ctx, cancel := context.WithCancel(t.Context())
		r := &countingReader{r: bytes.NewReader(b), cancel: cancel}
		_, err := Verify(ctx, r, zerolog.Nop())
		if !errors.Is(err, context.Canceled) || r.n > 32<<10 {
			t.Errorf("%s: Verify read %d of %d bytes, its context cancelled after 8 KiB, and returned %v; want context.Canceled within 32 KiB", name, r.n, len(b), err)
		}
	}
}
