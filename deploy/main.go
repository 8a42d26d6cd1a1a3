// Command edge-deploy builds the module image without Docker, renders and
// validates deployment manifests, applies them and rolls them out to fleets
// in waves through IoT Hub, and runs the local lab that emulates DPS, IoT
// Hub and the edge runtime, so that all of it can be tried without Azure.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err and maps it to the exit status: 0 for success and
// --help, 2 for usage errors, 1 for failures.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil || isHelp(err):
		return 0
	case isUsage(err):
		fmt.Fprintln(stderr, "edge-deploy:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "edge-deploy:", err)
		return 1
	}
}
