package image_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/edgetpm/edgetpm/deploy/image"
)

// Build the module image for two platforms from the repository root, as
// "edge-deploy image build" does. (No Output: it runs the go command.)
func ExampleBuild() {
	res, err := image.Build(context.Background(), image.Options{
		Dir:       ".",
		Platforms: []string{"linux/amd64", "linux/arm/v7"},
		Name:      "myregistry.azurecr.io/edge-relay:1.0.0",
		Version:   "1.0.0",
		Created:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Out:       "dist",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, img := range res.Images {
		fmt.Println(img.Platform, img.Manifest, img.DockerArchive)
	}
	fmt.Println("index", res.Index, res.OCIArchive)
}
