package imagearchive_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/provisioner/imagearchive"
)

// Check an archive before it goes anywhere, and list what it holds.
func ExampleVerify() {
	f, err := os.Open("/var/lib/edge-provisioner/images/azureiotedge.tar.gz")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	a, err := imagearchive.Verify(context.Background(), f, zerolog.Nop())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, gzip %v\n", a.Format, a.Compressed)
	for _, img := range a.Images {
		fmt.Println(img.Names, img.Config)
	}
}
