package containerd_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/provisioner/containerd"
)

// Side-load the IoT Edge images and wait until the runtime is healthy, as
// edge-provisioner does on a device.
func Example() {
	ctx := context.Background()
	c, err := containerd.New(ctx, containerd.DefaultAddress,
		containerd.WithLogger(zerolog.New(os.Stderr)))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	res, err := c.Load(ctx, "/var/lib/edge-provisioner/images/azureiotedge.tar.gz")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("loaded %d images via %s: %s\n", len(res.Images), res.Via, res.Reason)

	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := c.WaitRunning(ctx, []string{"edgeAgent", "edgeHub"}, time.Second); err != nil {
		log.Fatal(err)
	}
}
