// Command edge-deploy builds the module image without Docker, renders and
// validates deployment manifests, applies them and rolls them out to fleets
// in waves through IoT Hub, enrolls fleets of TPM devices in DPS, and runs
// the local lab that emulates DPS, IoT Hub and the edge runtime, so that
// all of it can be tried without Azure.
package main

import "github.com/edgetpm/edgetpm/internal/cli"

func main() { cli.Main("edge-deploy", run) }
