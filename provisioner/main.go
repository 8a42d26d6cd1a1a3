// Command edge-provisioner gives an Azure IoT Edge device its identity from
// its TPM: it reads the endorsement key and registration ID an operator
// enrolls in DPS, and signs SAS tokens inside the TPM.
package main

import (
	"context"
	"io"
	"os"

	"github.com/edgetpm/edgetpm/internal/cli"
)

func main() {
	cli.Main("edge-provisioner", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return run(ctx, args, os.Stdin, stdout, stderr, os.Getenv)
	})
}
