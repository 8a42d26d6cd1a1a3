// Command sleeper is the process of the test images: it says it started,
// then sleeps until SIGTERM or SIGINT, which it handles itself because a
// container's PID 1 gets no default signal handling.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fmt.Printf("sleeper started as %q, IOTEDGE_MODULEID=%q\n", os.Args, os.Getenv("IOTEDGE_MODULEID"))
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("sleeper stopping on", <-c)
}
