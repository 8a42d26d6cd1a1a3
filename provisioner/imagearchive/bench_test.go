package imagearchive

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/testharness/containerdtest"
)

// BenchmarkVerify verifies, in memory, an archive with a 16 MiB layer of
// random bytes (incompressible, like a module binary): the part of every
// Load that reads the whole archive once before anything reaches a store.
// MB/s is of the uncompressed layer.
func BenchmarkVerify(b *testing.B) {
	const size = 16 << 20
	layer := make([]byte, size)
	rand.Read(layer)
	img := containerdtest.NewImage(b, map[string][]byte{"blob": layer})
	for _, tc := range []struct {
		name   string
		format string
		gz     bool
	}{
		{"docker-archive", containerdtest.DockerArchive, false},
		{"oci-layout+gzip", containerdtest.OCILayout, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "image.tar")
			containerdtest.WriteArchive(b, path, tc.format, tc.gz, containerdtest.Entry{Ref: "bench.example/verify:1", Image: img})
			archive, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			for b.Loop() {
				a, err := Verify(b.Context(), bytes.NewReader(archive), zerolog.Nop())
				if err != nil || len(a.Images) != 1 || a.Compressed != tc.gz {
					b.Fatalf("Verify = %+v, %v", a, err)
				}
			}
		})
	}
}
