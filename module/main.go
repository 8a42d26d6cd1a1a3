// Command edge-relay is the IoT Edge module that keeps the module twin's
// desired state in effect and relays telemetry to edgeHub. It runs as an
// IoT Edge module (identity from the workload API), as a device straight
// to IoT Hub (identity in the TPM, as edge-provisioner saved it), or in
// development from a connection string.
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
		fmt.Fprintln(os.Stderr, "edge-relay:", err)
	}
	os.Exit(exitCode(err))
}

// usageError is a mistake in the command line or environment: exit 2.
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	default:
		return 1
	}
}
