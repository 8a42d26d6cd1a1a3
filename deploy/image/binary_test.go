package image_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/edgetpm/edgetpm/deploy/image"
)

// An installed edge-relay goes into the image as it is: no go command, no
// source folder.
func TestBuildFromBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "edge-relay")
	want := []byte("\x7fELF a relay built elsewhere")
	if err := os.WriteFile(bin, want, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // no go command
	res, err := image.Build(t.Context(), image.Options{Binary: bin, Dir: "/nonexistent", Platforms: []string{"linux/arm64"}, Name: ref, Out: t.TempDir()})
	if err != nil {
		t.Fatalf("Build with a binary: %v", err)
	}
	img, err := tarball.ImageFromPath(res.Images[0].DockerArchive, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no edge-relay in the layer: %v", err)
		}
		if h.Name == "edge-relay" {
			got, _ := io.ReadAll(tr)
			if !bytes.Equal(got, want) {
				t.Errorf("edge-relay in the image = %q, want %q", got, want)
			}
			break
		}
	}

	_, err = image.Build(t.Context(), image.Options{Binary: bin, Platforms: []string{"linux/amd64", "linux/arm64"}, Name: ref, Out: t.TempDir()})
	if err == nil {
		t.Error("Build with one binary for two platforms: no error")
	}
}
