package containerd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
	"github.com/edgetpm/edgetpm/internal/testharness/syncbuf"
	"github.com/edgetpm/edgetpm/provisioner/imagearchive"
)

// newClient connects to d; the client logs to the test and to the
// returned buffer, as JSON lines.
func newClient(t *testing.T, d *containerdtest.Daemon, opts ...Option) (*Client, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).With().Timestamp().Logger()
	c, err := New(t.Context(), d.Address, append([]Option{WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, logs
}

// logBuffer keeps log lines.
type logBuffer struct{ syncbuf.Buffer }

// messages returns the msg of every line.
func (b *logBuffer) messages() []string {
	var out []string
	for line := range strings.Lines(b.String()) {
		var l struct{ Message string }
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l.Message)
		}
	}
	return out
}

// storeImages returns the images in namespace ns of d by name.
func storeImages(t *testing.T, d *containerdtest.Daemon, ns string) map[string]images.Image {
	t.Helper()
	c, err := containerd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	list, err := c.ImageService().List(namespaces.WithNamespace(t.Context(), ns))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]images.Image{}
	for _, img := range list {
		m[img.Name] = img
	}
	return m
}

// imageState returns the config digest of an image in d and whether it is
// unpacked into the default snapshotter.
func imageState(t *testing.T, d *containerdtest.Daemon, ns string, img images.Image) (config string, unpacked bool) {
	t.Helper()
	c, err := containerd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	i := containerd.NewImage(c, img)
	desc, err := i.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unpacked, err = i.IsUnpacked(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return desc.Digest.String(), unpacked
}

// rewrite copies the archive src to dst, passing each file's content
// through edit, and gzips dst when src was gzipped.
func rewrite(t *testing.T, src, dst string, edit func(name string, b []byte) []byte) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, gz, err := imagearchive.Decompress(f)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var w io.Writer = &out
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed) // fast under -race
	if gz {
		w = zw
	}
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		b = edit(hdr.Name, slices.Clone(b))
		hdr.Size = int64(len(b))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// flipLargest returns an edit that flips one bit in the middle of the
// largest file whose name has suffix, and reports that file's name.
func flipLargest(t *testing.T, src, suffix string) (edit func(string, []byte) []byte, file string) {
	t.Helper()
	var size int
	rewrite(t, src, os.DevNull, func(name string, b []byte) []byte {
		if strings.HasSuffix(name, suffix) && len(b) > size {
			file, size = name, len(b)
		}
		return b
	})
	if file == "" {
		t.Fatalf("no file *%s in %s", suffix, src)
	}
	return func(name string, b []byte) []byte {
		if name == file {
			b[len(b)/2] ^= 0x10
		}
		return b
	}, file
}
