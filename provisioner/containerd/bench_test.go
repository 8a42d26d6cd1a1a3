package containerd

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// BenchmarkLoad side-loads a gzip OCI layout with a 16 MiB layer of random
// bytes (incompressible, like a module binary) into a real containerd:
// "new" verifies, imports and unpacks a fresh image each time; "present"
// is a second load of the same archive, as on every provision after the
// first. MB/s is of the uncompressed layer.
func BenchmarkLoad(b *testing.B) {
	d := containerdtest.Start(b)
	const size = 16 << 20
	archive := func(tag string) string {
		layer := make([]byte, size)
		rand.Read(layer)
		path := filepath.Join(b.TempDir(), "image.tar.gz")
		img := containerdtest.NewImage(b, map[string][]byte{"blob": layer})
		containerdtest.WriteArchive(b, path, containerdtest.OCILayout, true, containerdtest.Entry{Ref: "bench.example/load:" + tag, Image: img})
		return path
	}
	c, err := New(b.Context(), d.Address, WithDockerSocket(""), WithLogger(zerolog.Nop()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	b.Run("new", func(b *testing.B) {
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			b.StopTimer()
			path := archive(fmt.Sprint("v", i))
			i++
			b.StartTimer()
			if _, err := c.Load(b.Context(), path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("present", func(b *testing.B) {
		b.SetBytes(size)
		path := archive("present")
		if _, err := c.Load(b.Context(), path); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			res, err := c.Load(b.Context(), path)
			if err != nil || !res.Images[0].Skipped {
				b.Fatalf("second Load = %+v, %v; want skipped", res, err)
			}
		}
	})
}
