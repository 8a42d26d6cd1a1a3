package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
)

// write writes the archives of imgs, the images of targets, to opts.Out;
// work is a scratch folder.
func write(opts Options, ref reference.NamedTagged, targets []goPlatform, imgs []v1.Image, work string) (*Result, error) {
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	// docker load names the image as written, so the familiar form:
	// "edgetpm/edge-relay:dev", not "index.docker.io/...".
	tag, err := name.NewTag(reference.FamiliarString(ref))
	if err != nil {
		return nil, fmt.Errorf("image name %q: %w", opts.Name, err)
	}
	res := &Result{OCIArchive: filepath.Join(opts.Out, binary+".oci.tar")}
	adds := make([]mutate.IndexAddendum, len(imgs))
	for i, img := range imgs {
		p := targets[i].platform
		out, err := describe(img)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p.String(), err)
		}
		out.Platform = p.String()
		out.DockerArchive = filepath.Join(opts.Out, binary+"-"+fileSuffix(p)+".docker.tar")
		var buf bytes.Buffer
		if err := tarball.Write(tag, img, &buf); err != nil {
			return nil, fmt.Errorf("docker-archive for %s: %w", p.String(), err)
		}
		if err := atomicfile.WriteFile(out.DockerArchive, buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		opts.Log.Info().Str("platform", out.Platform).Str("manifest", out.Manifest.String()).Str("file", out.DockerArchive).Msg("wrote docker-archive")
		res.Images = append(res.Images, *out)
		adds[i] = mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}}
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	if res.Index, err = idx.Digest(); err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	if err := writeLayout(res.OCIArchive, filepath.Join(work, "layout"), ref, idx, opts.Created); err != nil {
		return nil, err
	}
	opts.Log.Info().Str("index", res.Index.String()).Str("file", res.OCIArchive).Msg("wrote OCI image layout")
	// Archives of an earlier build for other platforms would pass for
	// this one's: 'image load dist/*.tar' must load this build only.
	written := map[string]bool{res.OCIArchive: true}
	for _, img := range res.Images {
		written[img.DockerArchive] = true
	}
	stale, _ := filepath.Glob(filepath.Join(opts.Out, binary+"*.tar"))
	for _, f := range stale {
		if !written[f] {
			if err := os.Remove(f); err != nil {
				return nil, fmt.Errorf("remove the stale archive %s: %w", f, err)
			}
		}
	}
	return res, nil
}

// describe returns the digests and pull size of img.
func describe(img v1.Image) (*Image, error) {
	var out Image
	var err error
	if out.Manifest, err = img.Digest(); err != nil {
		return nil, err
	}
	if out.Config, err = img.ConfigName(); err != nil {
		return nil, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	out.Size = int64(len(raw))
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return nil, err
		}
		out.Size += n
	}
	return &out, nil
}

// writeLayout writes idx as an OCI image layout, in a tar file at path,
// by way of the folder dir. index.json holds one entry, the
// multi-platform index, named ref, as buildx's OCI output does: were each
// platform's manifest listed there under the same name, containerd's
// importer would give the name to the last one, whatever the host.
func writeLayout(path, dir string, ref reference.Named, idx v1.ImageIndex, mtime time.Time) error {
	top := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{
		Add: idx,
		Descriptor: v1.Descriptor{Annotations: map[string]string{
			"io.containerd.image.name":          ref.String(),
			"org.opencontainers.image.ref.name": ref.String(),
		}},
	})
	if _, err := layout.Write(dir, top); err != nil {
		return fmt.Errorf("OCI image layout: %w", err)
	}
	var buf bytes.Buffer
	if err := tarDir(&buf, dir, mtime); err != nil {
		return fmt.Errorf("OCI image layout: %w", err)
	}
	return atomicfile.WriteFile(path, buf.Bytes(), 0o644)
}

// tarDir writes the files under dir to w as a tar that depends only on
// their names and content: sorted, USTAR, owned by root, mode 0644, all of
// time mtime.
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, path)
			names = append(names, filepath.ToSlash(rel))
			return err
		}
		return err
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(n)))
		if err != nil {
			return err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}
