package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/rs/zerolog"
)

const usage = `usage: edge-deploy <command> [flags]

commands:
  lab up      run the whole path on this machine: TPM, DPS and IoT Hub
              emulators, edge-provisioner, edge runtime, edge-relay, sensor
  lab dps     serve a DPS emulator for TPM attestation over HTTPS
  lab enroll  enroll a TPM in the running lab's DPS, from
              'edge-provisioner identity --json'
  lab hub     serve an edgeHub and IoT Hub emulator (MQTT over TLS and a
              service API) for the devices lab dps assigns
  lab workload serve the IoT Edge workload API for a device's modules
  lab module  add, remove or list a lab device's module identities: the
              hub refuses a module without one, as IoT Hub does
  lab twin set change a lab module's desired properties and show it applying them
  lab twin show print a lab module's twin
  lab method  invoke a direct method on a lab module and print its answer
  lab messages print (--follow) the device-to-cloud messages reaching the lab hub
  lab logs    print (--follow) the log of a module the lab runs
  lab hosts   print, or write into /etc/hosts, the lines that resolve the
              lab's host names to where it serves them
  image build build the edge-relay module image without Docker
  package     build the Debian packages (.deb) without Docker
  render      render a deployment manifest from a template and values
  validate    check deployment manifests, each problem at its JSON path
  apply       apply a deployment to one edge device
  rollout     roll a deployment out in waves, each gated on the last's health
  status      show a rollout's waves: targeted, applied, succeeded, failed
  rollback    remove a wave's deployment and the waves after it
  enroll      enroll TPM devices in DPS in bulk, each EK certificate checked
              up to its manufacturer; enroll show, disable, delete

Commands that reach IoT Hub read its service connection string from
$IOTHUB_CONNECTION_STRING or --connection-string-file, never from the
command line; --lab DIR uses the running lab hub. enroll reads DPS's from
$DPS_CONNECTION_STRING or --connection-string-file the same way.

Run "edge-deploy lab dps --help" for the flags of a command.

` + cli.ExitStatus + `
`

// run runs the command in args (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "lab":
		switch {
		case len(args) > 1 && args[1] == "up":
			return labUp(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "dps":
			return labDPS(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "enroll":
			return labEnroll(ctx, args[2:], os.Stdin, stdout, stderr)
		case len(args) > 1 && args[1] == "hub":
			return labHub(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "workload":
			return labWorkload(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "hosts":
			return labHosts(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "module":
			return labModule(ctx, args[2:], stdout)
		case len(args) > 2 && args[1] == "twin" && args[2] == "set":
			return labTwinSet(ctx, args[3:], os.Stdin, stdout, stderr)
		case len(args) > 2 && args[1] == "twin" && args[2] == "show":
			return labTwinShow(ctx, args[3:], stdout, stderr)
		case len(args) > 1 && args[1] == "method":
			return labMethod(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "messages":
			return labMessages(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "logs":
			return labLogs(ctx, args[2:], stdout, stderr)
		}
		return cli.Usagef("lab: want up, dps, enroll, hub, workload, module, hosts, twin set, twin show, method, messages or logs")
	case "image":
		return runImage(ctx, args[1:], stdout, stderr)
	case "package":
		return packageCmd(ctx, args[1:], stdout, stderr, os.Getenv)
	case "render":
		return renderCmd(ctx, args[1:], stdout, stderr)
	case "validate":
		return validateCmd(ctx, args[1:], stdout, stderr)
	case "apply":
		return applyCmd(ctx, args[1:], stdout, stderr, os.Getenv)
	case "rollout":
		return rolloutCmd(ctx, args[1:], stdout, stderr, os.Getenv)
	case "status":
		return statusCmd(ctx, args[1:], stdout, stderr, os.Getenv)
	case "rollback":
		return rollbackCmd(ctx, args[1:], stdout, stderr, os.Getenv)
	case "enroll":
		return enrollCmd(ctx, args[1:], os.Stdin, stdout, stderr, os.Getenv)
	}
	return cli.Usagef("unknown command %q", args[0])
}

// consoleLog is the log of a command: plain lines with a time, on w.
func consoleLog(w io.Writer) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: time.RFC3339}).With().Timestamp().Logger()
}
