// Command edge-provisioner gives an Azure IoT Edge device its identity from
// its TPM: it reads the endorsement key and registration ID an operator
// enrolls in DPS, and signs SAS tokens inside the TPM.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-provisioner:", err)
	}
	os.Exit(exitCode(err))
}

// exitCode is 0 on success, 2 for a usage error, the step's code when a
// step of provision failed, 1 for any other failure.
func exitCode(err error) int {
	var (
		u    usageError
		step *stepError
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	case errors.As(err, &step):
		return step.code
	default:
		return 1
	}
}
