package containerd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/provisioner/imagearchive"
)

// Via says which store Load put images into.
type Via string

// The stores Load loads into.
const (
	ViaContainerd Via = "containerd"
	ViaDocker     Via = "docker"
)

// Image is one image that Load loaded.
type Image struct {
	// Name is the full reference, e.g. "docker.io/library/alpine:3.20";
	// "" for an image Docker loaded without a name.
	Name string `json:"name"`
	// Digest is the manifest digest when loaded into containerd and the
	// image ID (config digest) when loaded by Docker.
	Digest string `json:"digest"`
	// Skipped says the store already had the image under that name (and,
	// in containerd, unpacked), so nothing changed.
	Skipped bool `json:"skipped"`
}

// LoadResult says what Load did with an archive.
type LoadResult struct {
	Path string `json:"path"`
	// Format is imagearchive.FormatDocker or imagearchive.FormatOCI.
	Format     string `json:"format"`
	Compressed bool   `json:"compressed"`
	Via        Via    `json:"via"`
	// Reason says why Load chose Via.
	Reason string  `json:"reason"`
	Images []Image `json:"images"`
	// Bytes is the size of the archive file.
	Bytes int64 `json:"bytes"`
}

// danglingPrefix names images that have no name, as Docker's containerd
// image store does (moby daemon/containerd: danglingImageName), so that
// Docker lists them as <none> and containerd does not collect them.
const danglingPrefix = "moby-dangling"

// rollbackTimeout bounds putting names back after a failed load, which
// runs even when the load's context has ended.
const rollbackTimeout = 30 * time.Second

// Load side-loads the archive at path, a docker-archive (docker save) or an
// OCI image layout, as a tar file that may be gzipped. It reads the archive
// twice: first to verify every digest, so that a corrupt file never
// reaches a store, then to load it into the store Docker reads images from
// (see the package documentation). In containerd it also unpacks the
// images into the snapshotter, so that containers can start from them.
// When Load fails, the image names in the store are as they were.
func (c *Client) Load(ctx context.Context, path string) (*LoadResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load image archive: %w", err) // err names path
	}
	defer f.Close()
	res, err := c.load(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("load image archive %s: %w", path, err)
	}
	res.Path = path
	return res, nil
}

func (c *Client) load(ctx context.Context, f *os.File) (*LoadResult, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	res := &LoadResult{Bytes: fi.Size()}
	log := c.log.With().Str("archive", f.Name()).Logger()
	log.Info().Int64("bytes", res.Bytes).Msg("reading archive")
	a, err := imagearchive.Verify(ctx, f, log)
	if err != nil {
		return nil, err
	}
	res.Format, res.Compressed = a.Format, a.Compressed

	var info *DockerInfo
	res.Via, res.Reason, info, err = c.route(ctx)
	if err != nil {
		return nil, err
	}
	log.Info().Str("format", res.Format).Str("via", string(res.Via)).Str("reason", res.Reason).Msg("importing")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tarStream, _, err := imagearchive.Decompress(f)
	if err != nil {
		return nil, err
	}
	if res.Via == ViaDocker {
		d := newDocker(c.dockerSocket)
		defer d.close()
		res.Images, err = d.load(ctx, info, a, tarStream)
	} else {
		var snapshotter string // containerd's default, overlayfs
		if info != nil {
			snapshotter = info.Driver // the one Docker unpacks into
		}
		res.Images, err = c.importImages(ctx, a, tarStream, snapshotter, log)
	}
	if err != nil {
		return nil, err
	}
	for _, img := range res.Images {
		msg := "loaded"
		if img.Skipped {
			msg = "already present"
		}
		log.Info().Str("image", img.Name).Str("digest", img.Digest).Str("via", string(res.Via)).Msg(msg)
	}
	return res, nil
}

// route decides where Load puts images: into containerd, unless Docker
// keeps its own classic image store, which does not see containerd's
// images (moby issue 47930).
func (c *Client) route(ctx context.Context) (Via, string, *DockerInfo, error) {
	if c.dockerSocket == "" {
		return ViaContainerd, "Docker detection is off", nil, nil
	}
	if _, err := os.Stat(c.dockerSocket); errors.Is(err, fs.ErrNotExist) {
		return ViaContainerd, "no Docker socket at " + c.dockerSocket, nil, nil
	}
	info, err := DockerStoreInfo(ctx, c.dockerSocket)
	if err != nil {
		return "", "", nil, err
	}
	if info.ContainerdStore {
		return ViaContainerd, fmt.Sprintf("Docker %s uses the containerd image store (%s)", info.Version, info.Driver), info, nil
	}
	return ViaDocker, fmt.Sprintf("Docker %s uses its classic image store (%s), which does not see containerd's images", info.Version, info.Driver), info, nil
}

// importImages imports a verified archive into the client's namespace and
// unpacks its images into snapshotter ("" for containerd's default).
func (c *Client) importImages(ctx context.Context, a *imagearchive.Archive, tarStream io.Reader, snapshotter string, log zerolog.Logger) (_ []Image, err error) {
	ctx = c.nsContext(ctx)
	// One lease over import, unpack and rollback, so that the garbage
	// collector keeps the content until images name it.
	ctx, done, err := c.ctd.WithLease(ctx)
	if err != nil {
		return nil, err
	}
	defer done(context.WithoutCancel(ctx))

	is := c.ctd.ImageService()
	list, err := is.List(ctx)
	if err != nil {
		return nil, err
	}
	before := map[string]images.Image{}
	for _, img := range list {
		before[img.Name] = img
	}
	var names []string
	for _, img := range a.Images {
		names = append(names, img.Names...)
		if len(img.Names) == 0 && img.Digest != "" {
			names = append(names, danglingPrefix+"@"+img.Digest)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.restore(ctx, before, names))
		}
	}()

	imported, err := c.ctd.Import(ctx, tarStream,
		// Name OCI images by a full reference in ref.name too, as Verify
		// does; the platform is the host's (Import's default).
		containerd.WithImageRefTranslator(imagearchive.RefName),
		// Keep images without a name, under the name Docker gives them.
		containerd.WithDigestRef(archive.DigestTranslator(danglingPrefix)),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }),
		// No WithImportCompression: docker save's layers stay uncompressed,
		// which costs disk but no CPU, and nothing pushes them on.
	)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var out []Image
	for _, img := range imported {
		if !slices.Contains(names, img.Name) {
			names = append(names, img.Name)
		}
		i := containerd.NewImage(c.ctd, img)
		unpacked, err := i.IsUnpacked(ctx, snapshotter)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		if !unpacked {
			log.Info().Str("image", img.Name).Str("snapshotter", cmp.Or(snapshotter, "default")).Msg("unpacking")
			if err := i.Unpack(ctx, snapshotter); err != nil {
				return nil, fmt.Errorf("unpack %s: %w", img.Name, err)
			}
		}
		prev, had := before[img.Name]
		out = append(out, Image{
			Name:    img.Name,
			Digest:  img.Target.Digest.String(),
			Skipped: had && prev.Target.Digest == img.Target.Digest && unpacked,
		})
	}
	return out, nil
}

// restore puts names back on the images they named before a failed
// import: it deletes the new ones and points the others back.
func (c *Client) restore(ctx context.Context, before map[string]images.Image, names []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	is := c.ctd.ImageService()
	var errs []error
	for _, name := range names {
		prev, had := before[name]
		cur, err := is.Get(ctx, name)
		switch {
		case errdefs.IsNotFound(err):
		case err != nil:
			errs = append(errs, err)
		case !had:
			errs = append(errs, is.Delete(ctx, name))
		case cur.Target.Digest != prev.Target.Digest:
			_, err = is.Update(ctx, prev, "target")
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore image names: %w", err)
	}
	return nil
}
