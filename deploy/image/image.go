// Package image builds the edge-relay module image without Docker: one
// static binary per platform in a scratch image, written as a multi-platform
// OCI image layout and one docker-archive per platform. The same sources,
// options and Go toolchain give the same bytes, so a digest can be checked
// by rebuilding.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/deploy/gobuild"
)

const (
	// binary is the program's name in the image, at its root.
	binary = "edge-relay"
	// uid runs the container and owns /data: distroless's "nonroot", so
	// that hosts that map it already know it.
	uid = 65532
	// dataDir is the queue's volume, $EDGE_RELAY_DATA.
	dataDir = "data"
	// metricsPort serves /metrics and /healthz (module --metrics-addr).
	metricsPort = "9600/tcp"
	source      = "https://github.com/edgetpm/edgetpm"
)

// Options says what Build builds. Build fills in the defaults.
type Options struct {
	// Dir is the root of the Go module that holds Module; default ".".
	Dir string
	// Binary is an edge-relay already built, static, for the only
	// platform of Platforms (an installed one); when set, Build runs no go
	// command and Dir and Module are not used.
	Binary string
	// Module is the main package, relative to Dir; default "./module".
	Module string
	// Platforms are os/arch[/variant], as ParsePlatform takes them;
	// default linux/amd64, linux/arm64 and linux/arm/v7.
	Platforms []string
	// Name is the image reference, e.g. "edgetpm/edge-relay:dev"
	// (required); without a tag it is "latest".
	Name string
	// Version and Revision become the OCI version and revision labels;
	// empty ones are left out.
	Version, Revision string
	// Created is the time of the image and of every file in it, fixed so
	// that builds are reproducible; default the Unix epoch.
	Created time.Time
	// Out is the folder the archives are written to (required).
	Out string
	// Log gets one line per step; zero means none.
	Log zerolog.Logger
}

// Result is what Build wrote.
type Result struct {
	// Index is the digest of the multi-platform image index, as a registry
	// would show it once pushed.
	Index v1.Hash `json:"index"`
	// OCIArchive is the OCI image layout, as a tar file.
	OCIArchive string  `json:"ociArchive"`
	Images     []Image `json:"images"`
}

// Image is the image of one platform.
type Image struct {
	Platform string  `json:"platform"`
	Manifest v1.Hash `json:"manifest"`
	// Config is the image ID.
	Config v1.Hash `json:"config"`
	// Size is what a pull moves: the compressed layers and the config.
	Size int64 `json:"size"`
	// DockerArchive is the docker-archive (docker load) of this platform.
	DockerArchive string `json:"dockerArchive"`
}

// goPlatform is a platform Build can build for: Go's target and the OCI
// platform it runs on.
type goPlatform struct {
	env      []string
	platform v1.Platform
}

// platforms are the targets of Build. GOAMD64 and GOARM64 are pinned to
// the baseline so that a builder's environment cannot make an image that
// older CPUs refuse.
var platforms = map[string]goPlatform{
	"linux/amd64":   {[]string{"GOARCH=amd64", "GOAMD64=v1"}, v1.Platform{OS: "linux", Architecture: "amd64"}},
	"linux/arm64":   {[]string{"GOARCH=arm64", "GOARM64=v8.0"}, v1.Platform{OS: "linux", Architecture: "arm64"}},
	"linux/arm/v7":  {[]string{"GOARCH=arm", "GOARM=7"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
	"linux/arm/v6":  {[]string{"GOARCH=arm", "GOARM=6"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
	"linux/386":     {[]string{"GOARCH=386"}, v1.Platform{OS: "linux", Architecture: "386"}},
	"linux/ppc64le": {[]string{"GOARCH=ppc64le"}, v1.Platform{OS: "linux", Architecture: "ppc64le"}},
	"linux/riscv64": {[]string{"GOARCH=riscv64"}, v1.Platform{OS: "linux", Architecture: "riscv64"}},
	"linux/s390x":   {[]string{"GOARCH=s390x"}, v1.Platform{OS: "linux", Architecture: "s390x"}},
}

// aliases are the names containerd and buildx normalise.
var aliases = map[string]string{"linux/arm": "linux/arm/v7", "linux/arm64/v8": "linux/arm64"}

var defaultPlatforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}

// ParsePlatform returns the OCI platform of s ("linux/arm/v7").
func ParsePlatform(s string) (v1.Platform, error) {
	p, err := lookup(s)
	return p.platform, err
}

func lookup(s string) (goPlatform, error) {
	if a, ok := aliases[s]; ok {
		s = a
	}
	p, ok := platforms[s]
	if !ok {
		return goPlatform{}, fmt.Errorf("unsupported platform %q: want linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/riscv64 or linux/s390x", s)
	}
	return p, nil
}

// Build builds the image for every platform of opts and writes, in
// opts.Out, edge-relay.oci.tar (all platforms) and
// edge-relay-<os>-<arch>[-<variant>].docker.tar (one each). It runs the go
// command on PATH.
func Build(ctx context.Context, opts Options) (*Result, error) {
	opts, ref, targets, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "edge-relay-image")
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(work)

	imgs := make([]v1.Image, len(targets))
	for i, p := range targets {
		opts.Log.Info().Str("platform", p.platform.String()).Msg("building")
		var bin []byte
		if opts.Binary != "" {
			bin, err = os.ReadFile(opts.Binary)
		} else {
			bin, err = goBuild(ctx, opts, p, filepath.Join(work, binary+"-"+fileSuffix(p.platform)))
		}
		if err != nil {
			return nil, err
		}
		if imgs[i], err = newImage(opts, p.platform, bin); err != nil {
			return nil, fmt.Errorf("image for %s: %w", p.platform.String(), err)
		}
	}
	return write(opts, ref, targets, imgs, work)
}

// withDefaults fills in opts and checks it.
func withDefaults(opts Options) (Options, reference.NamedTagged, []goPlatform, error) {
	if opts.Dir == "" {
		opts.Dir = "."
	}
	if opts.Module == "" {
		opts.Module = "./module"
	}
	if len(opts.Platforms) == 0 {
		opts.Platforms = defaultPlatforms
	}
	if opts.Created.IsZero() {
		opts.Created = time.Unix(0, 0)
	}
	// A tar header holds whole seconds.
	opts.Created = opts.Created.UTC().Truncate(time.Second)
	if opts.Out == "" {
		return opts, nil, nil, errors.New("build image: no output folder")
	}
	named, err := reference.ParseDockerRef(opts.Name)
	if err != nil {
		return opts, nil, nil, fmt.Errorf("image name %q: %w", opts.Name, err)
	}
	ref, ok := named.(reference.NamedTagged)
	if !ok {
		return opts, nil, nil, fmt.Errorf("image name %q: want a tag, not a digest", opts.Name)
	}
	if opts.Binary != "" && len(opts.Platforms) != 1 {
		return opts, nil, nil, fmt.Errorf("build image: a built binary is for one platform, not %d", len(opts.Platforms))
	}
	var targets []goPlatform
	seen := map[string]bool{}
	for _, s := range opts.Platforms {
		p, err := lookup(s)
		if err != nil {
			return opts, nil, nil, err
		}
		if !seen[p.platform.String()] {
			seen[p.platform.String()] = true
			targets = append(targets, p)
		}
	}
	return opts, ref, targets, nil
}

// goBuild builds opts.Module for p into out, static and reproducible.
func goBuild(ctx context.Context, opts Options, p goPlatform, out string) ([]byte, error) {
	err := gobuild.Build(ctx, gobuild.Options{Dir: opts.Dir, Package: opts.Module, Out: out, GOOS: p.platform.OS, Arch: p.env})
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("go build %s for %s: %w", opts.Module, p.platform.String(), err)
	}
	return bin, nil
}

// newImage makes the scratch image of one platform around bin.
func newImage(opts Options, p v1.Platform, bin []byte) (v1.Image, error) {
	layer, err := newLayer(bin, opts.Created)
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: opts.Created}, CreatedBy: "edge-deploy image build"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: opts.Created}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", uid, uid),
		Entrypoint:   []string{"/" + binary},
		WorkingDir:   "/",
		Env:          []string{"EDGE_RELAY_DATA=/" + dataDir},
		Volumes:      map[string]struct{}{"/" + dataDir: {}},
		ExposedPorts: map[string]struct{}{metricsPort: {}},
		Healthcheck: &v1.HealthConfig{
			Test:        []string{"CMD", "/" + binary, "health"},
			Interval:    30 * time.Second,
			Timeout:     5 * time.Second,
			StartPeriod: 10 * time.Second,
			Retries:     3,
		},
		Labels: labels(opts),
	}
	return mutate.ConfigFile(img, cf)
}

// labels are the OCI annotations of the image config
// (image-spec annotations.md).
func labels(opts Options) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       binary,
		"org.opencontainers.image.description": "edge-relay: the Azure IoT Edge module of edgetpm that relays telemetry to edgeHub with a durable store-and-forward queue",
		"org.opencontainers.image.source":      source,
		"org.opencontainers.image.licenses":    "MIT",
		"org.opencontainers.image.created":     opts.Created.Format(time.RFC3339),
	}
	if opts.Version != "" {
		l["org.opencontainers.image.version"] = opts.Version
	}
	if opts.Revision != "" {
		l["org.opencontainers.image.revision"] = opts.Revision
	}
	return l
}

// newLayer returns the image's only layer, gzipped: /data (the volume,
// owned by the user the container runs as) and the binary, owned by root
// so that the process cannot replace it. The tar is USTAR (no PAX times)
// in name order, and the gzip header has no name or time, so the same
// binary always gives the same digest.
func newLayer(bin []byte, mtime time.Time) (v1.Layer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dir := &tar.Header{Typeflag: tar.TypeDir, Name: dataDir + "/", Mode: 0o700, Uid: uid, Gid: uid, ModTime: mtime, Format: tar.FormatUSTAR}
	file := &tar.Header{Typeflag: tar.TypeReg, Name: binary, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime, Format: tar.FormatUSTAR}
	err := tw.WriteHeader(dir)
	if err == nil {
		err = tw.WriteHeader(file)
	}
	if err == nil {
		_, err = tw.Write(bin)
	}
	if err == nil {
		err = tw.Close()
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if err == nil {
		_, err = zw.Write(raw.Bytes())
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// fileSuffix names p in file names: linux-arm-v7.
func fileSuffix(p v1.Platform) string {
	return strings.ReplaceAll(p.String(), "/", "-")
}
