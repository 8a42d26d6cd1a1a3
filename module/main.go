// Command edge-relay is the IoT Edge module that keeps the module twin's
// desired state in effect and relays telemetry to edgeHub. It runs as an
// IoT Edge module (identity from the workload API), as a device straight
// to IoT Hub (identity in the TPM, as edge-provisioner saved it), or in
// development from a connection string.
package main

import (
	"context"
	"io"
	"os"

	"github.com/edgetpm/edgetpm/internal/cli"
)

func main() {
	tuneRuntime(os.Getenv) // here, not in run: tests call run in their own process
	cli.Main("edge-relay", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return run(ctx, args, stdout, stderr, os.Getenv)
	})
}
