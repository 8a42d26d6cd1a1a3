package imagearchive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"
)

// The archive formats Verify reads, as Archive.Format names them.
const (
	FormatDocker = "docker-archive"
	FormatOCI    = "oci-layout"
)

const (
	// maxMetadata bounds one JSON file kept in memory; the OCI distribution
	// spec caps manifests at 4 MiB.
	maxMetadata = 4 << 20
	// maxKept bounds all the small files kept of one archive.
	maxKept = 64 << 20
	// maxDepth bounds nested OCI indexes.
	maxDepth = 8
)

// What containerd's images package calls AnnotationImageName and
// MediaTypeDockerSchema2Manifest(List), spelt out here so that this
// package links no containerd client and no gRPC.
const (
	annotationImageName         = "io.containerd.image.name"
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var gzipMagic = []byte{0x1f, 0x8b}

// Archive is what Verify learnt of an archive that passed.
type Archive struct {
	// Format is FormatDocker or FormatOCI.
	Format string
	// Compressed says the archive is gzipped.
	Compressed bool
	// DockerManifest says the archive has a manifest.json, the only thing
	// Docker before 25 (API 1.44) loads; Docker 25 writes it next to an
	// OCI layout.
	DockerManifest bool
	Images         []Image
}

// Image is one image in an archive: a manifest.json entry or an
// index.json entry.
type Image struct {
	// Names are the image names containerd's Import gives it, if any.
	Names []string
	// Digest is the index.json entry's digest (OCI layouts only).
	Digest string
	// Config is the digest of the image config for this host, i.e. the
	// image ID; "" when an index has no manifest for this platform.
	Config string
}

// blob is one regular file of an archive.
type blob struct {
	size   int64
	digest string // sha256 of the file
	// diffID is the sha256 of the content after gunzip when the file is
	// gzip, else digest: what an image config's rootfs.diff_ids lists.
	diffID  string
	gzipErr error
	// data is the file itself when small enough to be metadata.
	data []byte
}

// Decompress returns the tar stream in r, gunzipped when r starts with the
// gzip magic.
func Decompress(r io.Reader) (tarStream io.Reader, compressed bool, err error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(len(gzipMagic)); !bytes.Equal(magic, gzipMagic) {
		return br, false, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, true, fmt.Errorf("read gzip archive: %w", err)
	}
	return zr, true, nil
}

// Verify reads a whole archive, a tar stream that may be gzipped, and
// checks every digest it can before anything is imported: containerd's
// importer trusts the archive's own names for blobs and never looks at
// diff IDs, and Docker stops halfway through a multi-image archive,
// leaving the first images tagged. It logs each file it verified.
func Verify(ctx context.Context, r io.Reader, log zerolog.Logger) (*Archive, error) {
	// Every read checks ctx: an entry can be gigabytes, or un-gzip to
	// them, between two tar headers.
	tarStream, compressed, err := Decompress(ctxReader{ctx, r})
	if err != nil {
		return nil, err
	}
	files, links, err := readTar(ctx, tarStream)
	if err != nil {
		return nil, err
	}
	// The same precedence as containerd's importer (images/archive): an
	// oci-layout file makes it an OCI layout even when Docker 25 added a
	// manifest.json.
	var a *Archive
	switch {
	case files["oci-layout"] != nil:
		a, err = verifyOCI(files, log)
	case files["manifest.json"] != nil:
		a, err = verifyDocker(files, links, log)
	default:
		err = errors.New("not an image archive: neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)")
	}
	if err != nil {
		return nil, err
	}
	a.Compressed = compressed
	return a, nil
}

// readTar hashes every regular file of a tar stream and keeps the small
// ones; links maps symbolic links to their targets.
func readTar(ctx context.Context, r io.Reader) (files map[string]*blob, links map[string]string, err error) {
	tr := tar.NewReader(r)
	files, links = map[string]*blob{}, map[string]string{}
	// Each name once: with a file and a link of the same name, or two
	// files, what is verified here and what containerd's importer or
	// Docker reads could differ. Directories may repeat.
	seen := map[string]bool{} // name -> is a directory
	var kept int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			// Read past the tar trailer, so that gzip checks its CRC.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, nil, fmt.Errorf("read archive: %w", err)
			}
			return files, links, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read archive: %w", err)
		}
		if isSparse(hdr) {
			// A sparse entry expands to as many zeros as its header says,
			// from a few bytes; no image archive has one.
			return nil, nil, fmt.Errorf("read archive: %s is a sparse file", hdr.Name)
		}
		name := path.Clean(hdr.Name)
		dir, ok := seen[name]
		if ok && !(dir && hdr.Typeflag == tar.TypeDir) {
			return nil, nil, fmt.Errorf("read archive: %s is in it more than once", hdr.Name)
		}
		seen[name] = hdr.Typeflag == tar.TypeDir
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			// Keyed and resolved as containerd's importer does.
			links[hdr.Name] = path.Join(path.Dir(hdr.Name), hdr.Linkname)
		case tar.TypeReg:
			keep := hdr.Size <= maxMetadata && kept+hdr.Size <= maxKept
			b, err := readBlob(ctx, tr, hdr.Size, keep)
			if err != nil {
				return nil, nil, fmt.Errorf("read %s in archive: %w", hdr.Name, err)
			}
			if keep {
				kept += hdr.Size
			}
			files[name] = b
		}
	}
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// readBlob hashes one file, and its gunzipped content when it is gzip, in
// a single pass.
func readBlob(ctx context.Context, r io.Reader, size int64, keep bool) (*blob, error) {
	raw := sha256.New()
	var data bytes.Buffer
	var w io.Writer = raw
	if keep {
		data.Grow(int(size))
		w = io.MultiWriter(raw, &data)
	}
	br := bufio.NewReader(io.TeeReader(r, w))
	b := &blob{size: size}
	if magic, _ := br.Peek(len(gzipMagic)); bytes.Equal(magic, gzipMagic) {
		diff := sha256.New()
		zr, err := gzip.NewReader(br)
		if err == nil {
			_, err = io.Copy(diff, ctxReader{ctx, zr})
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			b.gzipErr = fmt.Errorf("gunzip: %w", err)
		} else {
			b.diffID = sum(diff)
		}
	}
	// Read what gunzip left; a failing tar stream fails here again, which
	// tells a truncated archive from a corrupt gzip inside a sound one.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	b.digest = sum(raw)
	if b.diffID == "" && b.gzipErr == nil {
		b.diffID = b.digest
	}
	if keep {
		b.data = data.Bytes()
	}
	return b, nil
}

// ctxReader fails its reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func sum(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// metadata decodes the JSON file name of files into v.
func metadata(files map[string]*blob, name string, v any) error {
	b := files[name]
	if b == nil {
		return fmt.Errorf("%s is missing from the archive", name)
	}
	return decode(name, b, v)
}

// decode decodes the JSON file b, called name, into v.
func decode(name string, b *blob, v any) error {
	if b.data == nil {
		return fmt.Errorf("%s is too large for image metadata (%d bytes)", name, b.size)
	}
	if err := json.Unmarshal(b.data, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// contentName returns the digest a file name promises: Docker names
// configs <hex>.json, OCI layouts (and Docker 25) name blobs
// blobs/sha256/<hex>.
func contentName(name string) (string, bool) {
	h := strings.TrimSuffix(path.Base(name), ".json")
	if path.Dir(name) != "blobs/sha256" && h == path.Base(name) {
		return "", false
	}
	if len(h) != sha256.Size*2 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", false
	}
	return "sha256:" + h, true
}

func checkName(name string, b *blob) error {
	if want, ok := contentName(name); ok && b.digest != want {
		return fmt.Errorf("%s is corrupt: its content is %s", name, b.digest)
	}
	return nil
}

// verifyDocker checks a docker-archive: each config is what its name says
// and each layer's uncompressed content is what the config's
// rootfs.diff_ids lists.
func verifyDocker(files map[string]*blob, links map[string]string, log zerolog.Logger) (*Archive, error) {
	var entries []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := metadata(files, "manifest.json", &entries); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	// Like containerd's importer, resolve every link once, to a file:
	// docker save links layers that several images share.
	for _, name := range slices.Sorted(maps.Keys(links)) {
		if files[links[name]] == nil {
			return nil, fmt.Errorf("link %s points to %s, which is not a file in the archive", name, links[name])
		}
	}
	lookup := func(name string) *blob {
		if b := files[name]; b != nil {
			return b
		}
		return files[links[name]]
	}
	a := &Archive{Format: FormatDocker, DockerManifest: true}
	for _, e := range entries {
		cfg := lookup(e.Config)
		if cfg == nil {
			return nil, fmt.Errorf("config %q of manifest.json is missing from the archive", e.Config)
		}
		if err := checkName(e.Config, cfg); err != nil {
			return nil, err
		}
		var config struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := decode(e.Config, cfg, &config); err != nil {
			return nil, err
		}
		diffIDs := config.RootFS.DiffIDs
		if len(diffIDs) != len(e.Layers) {
			return nil, fmt.Errorf("config %s lists %d layers, manifest.json %d", e.Config, len(diffIDs), len(e.Layers))
		}
		log.Info().Str("file", e.Config).Str("digest", cfg.digest).Msg("verified")
		for i, l := range e.Layers {
			b := lookup(l)
			if b == nil {
				return nil, fmt.Errorf("layer %q of manifest.json is missing from the archive", l)
			}
			if err := checkName(l, b); err != nil {
				return nil, err
			}
			if b.gzipErr != nil {
				return nil, fmt.Errorf("layer %s is corrupt: %w", l, b.gzipErr)
			}
			if b.diffID != diffIDs[i] {
				return nil, fmt.Errorf("layer %s is corrupt: its content is %s, config %s says %s", l, b.diffID, e.Config, diffIDs[i])
			}
			log.Info().Str("file", l).Str("diffID", b.diffID).Int64("size", b.size).Msg("verified")
		}
		img := Image{Config: cfg.digest}
		for _, tag := range e.RepoTags {
			// containerd's importer normalises the same way.
			ref, err := reference.ParseDockerRef(tag)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: image name %q: %w", tag, err)
			}
			img.Names = append(img.Names, ref.String())
		}
		a.Images = append(a.Images, img)
	}
	return a, nil
}

// verifyOCI checks an OCI image layout: every blob is what its name says,
// and every descriptor reachable from index.json has the size and digest
// of its blob.
func verifyOCI(files map[string]*blob, log zerolog.Logger) (*Archive, error) {
	var layout ocispec.ImageLayout
	if err := metadata(files, ocispec.ImageLayoutFile, &layout); err != nil {
		return nil, err
	}
	if layout.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("oci-layout: unsupported imageLayoutVersion %q", layout.Version)
	}
	var index ocispec.Index
	if err := metadata(files, "index.json", &index); err != nil {
		return nil, err
	}
	if len(index.Manifests) == 0 {
		return nil, errors.New("index.json lists no images")
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasPrefix(name, "blobs/") {
			continue
		}
		if _, ok := contentName(name); !ok {
			return nil, fmt.Errorf("blob %s: not a sha256 digest", name)
		}
		if err := checkName(name, files[name]); err != nil {
			return nil, err
		}
	}
	w := &ociWalk{files: files, log: log, host: platforms.Default(), configs: map[string]string{}, logged: map[string]bool{}}
	a := &Archive{Format: FormatOCI, DockerManifest: files["manifest.json"] != nil}
	for _, d := range index.Manifests {
		if !isManifest(d.MediaType) && !isIndex(d.MediaType) {
			return nil, fmt.Errorf("index.json: %s has media type %q, not an image", d.Digest, d.MediaType)
		}
		config, err := w.walk(d, "index.json", 0)
		if err != nil {
			return nil, err
		}
		img := Image{Digest: d.Digest.String(), Config: config}
		name, err := ociImageName(d.Annotations)
		if err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		if name != "" {
			img.Names = []string{name}
		}
		a.Images = append(a.Images, img)
	}
	return a, nil
}

// ociImageName returns the name containerd's Import gives an index.json
// entry, given RefName as its translator.
func ociImageName(annotations map[string]string) (string, error) {
	if name := annotations[annotationImageName]; name != "" {
		if _, err := reference.ParseNormalizedNamed(name); err != nil {
			return "", fmt.Errorf("image name %q: %w", name, err)
		}
		return name, nil
	}
	return RefName(annotations[ocispec.AnnotationRefName]), nil
}

// RefName turns an org.opencontainers.image.ref.name annotation into an
// image name, "" when it names none. The OCI spec allows a tag alone there ("1.0", as Docker 25
// writes next to io.containerd.image.name) or a full reference (skopeo,
// crane); only a full one names an image.
func RefName(ref string) string {
	if !strings.ContainsAny(ref, "/:@") {
		return ""
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ""
	}
	return named.String()
}

// ociWalk verifies the descriptors reachable from an OCI index.
type ociWalk struct {
	files map[string]*blob
	log   zerolog.Logger
	host  platforms.MatchComparer
	// configs caches walk's result by digest.
	configs map[string]string
	logged  map[string]bool
}

// walk verifies d, found in parent, and what it refers to, and returns
// the config digest of the image for this host.
func (w *ociWalk) walk(d ocispec.Descriptor, parent string, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("%s: indexes nested deeper than %d", parent, maxDepth)
	}
	name, b, err := w.blob(d, parent)
	if err != nil || b == nil {
		return "", err
	}
	if config, ok := w.configs[d.Digest.String()]; ok {
		return config, nil
	}
	var config string
	switch {
	case isIndex(d.MediaType):
		var idx ocispec.Index
		if err := metadata(w.files, name, &idx); err != nil {
			return "", err
		}
		for _, m := range idx.Manifests {
			c, err := w.walk(m, d.Digest.String(), depth+1)
			if err != nil {
				return "", err
			}
			if config == "" && (m.Platform == nil || w.host.Match(*m.Platform)) {
				config = c
			}
		}
	case isManifest(d.MediaType):
		var m ocispec.Manifest
		if err := metadata(w.files, name, &m); err != nil {
			return "", err
		}
		for _, l := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			if _, b, err := w.blob(l, d.Digest.String()); err != nil {
				return "", err
			} else if b == nil {
				return "", fmt.Errorf("%s: blob %s is missing from the archive", d.Digest, l.Digest)
			}
		}
		config = m.Config.Digest.String()
	}
	w.configs[d.Digest.String()] = config
	return config, nil
}

// blob returns the blob d describes after checking its size; nil without
// an error when it is missing but only another platform needs it, as in
// the single-platform saves of multi-platform images that Docker 25 makes.
func (w *ociWalk) blob(d ocispec.Descriptor, parent string) (string, *blob, error) {
	if err := d.Digest.Validate(); err != nil {
		return "", nil, fmt.Errorf("%s: descriptor digest %q: %w", parent, d.Digest, err)
	}
	name := path.Join("blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
	b := w.files[name]
	switch {
	case b == nil && d.Platform != nil && !w.host.Match(*d.Platform):
		return "", nil, nil
	case b == nil:
		return "", nil, fmt.Errorf("%s: blob %s is missing from the archive", parent, d.Digest)
	case b.size != d.Size:
		return "", nil, fmt.Errorf("%s: blob %s has %d bytes, the descriptor says %d", parent, d.Digest, b.size, d.Size)
	}
	if !w.logged[name] {
		w.logged[name] = true
		w.log.Info().Str("digest", b.digest).Int64("size", b.size).Msg("verified")
	}
	return name, b, nil
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == mediaTypeDockerManifestList
}

func isManifest(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageManifest || mediaType == mediaTypeDockerManifest
}
