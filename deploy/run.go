package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: edge-deploy <command> [flags]

commands:
  lab dps     serve a DPS emulator for TPM attestation over HTTPS
  lab enroll  enroll a TPM in the running lab's DPS, from
              'edge-provisioner identity --json'
  lab hub     serve an edgeHub and IoT Hub emulator (MQTT over TLS and a
              service API) for the devices lab dps assigns
  lab workload serve the IoT Edge workload API for a device's modules

Run "edge-deploy lab dps --help" for the flags of a command.
`

// usageError is a command line that cannot be run; it exits with 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

func isHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }

// run runs the command in args (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "lab":
		switch {
		case len(args) > 1 && args[1] == "dps":
			return labDPS(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "enroll":
			return labEnroll(ctx, args[2:], os.Stdin, stdout, stderr)
		case len(args) > 1 && args[1] == "hub":
			return labHub(ctx, args[2:], stdout, stderr)
		case len(args) > 1 && args[1] == "workload":
			return labWorkload(ctx, args[2:], stdout, stderr)
		}
		fmt.Fprint(stderr, usage)
		return usagef("lab: want dps, enroll, hub or workload")
	}
	fmt.Fprint(stderr, usage)
	return usagef("unknown command %q", args[0])
}

// parse parses a command's flags: --help is flag.ErrHelp, anything else
// wrong is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if isHelp(err) {
			return err
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}
