package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/hubservice"
)

// labModule manages the module identities of a lab device in the running
// lab hub through its service API, as an operator does in IoT Hub: the
// hub refuses a module that has no identity, so a module run by hand needs
// one. It prints no key: lab workload signs with the module's keys.
func labModule(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("lab module: want add, list or remove")
	}
	verb := args[0]
	fs := flag.NewFlagSet("edge-deploy lab module "+verb, flag.ContinueOnError)
	t := &labTarget{}
	t.register(fs)
	dir, device, hub := &t.dir, &t.device, &t.hub
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab module add|remove [flags] MODULE...\n       edge-deploy lab module list [flags]\n\nCreate, remove or list module identities of a lab device in the running lab hub.\nThe hub refuses a module without an identity (CONNACK 5), as IoT Hub does.\n\n")
		fs.PrintDefaults()
	}
	switch verb {
	case "add", "remove", "list":
	default:
		return cli.Usagef("lab module: %q: want add, list or remove", verb)
	}
	if err := cli.ParseArgs(fs, args[1:], stdout); err != nil {
		return err
	}
	if verb == "list" && fs.NArg() > 0 {
		return cli.Usagef("lab module list takes no arguments")
	}
	if verb != "list" && fs.NArg() == 0 {
		return cli.Usagef("lab module %s: want a MODULE ID", verb)
	}
	d, err := labDevice(*dir, *hub, *device, "lab module "+verb)
	if err != nil {
		return err
	}
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		for _, m := range fs.Args() {
			// As an operator creates it: IoT Hub gives it a generation
			// and keys; one that exists is 409 ModuleAlreadyExistsOnDevice.
			mod, err := c.PutModule(ctx, hubservice.Module{DeviceID: d, ModuleID: m}, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "module identity %s/%s created, generation %s\n", d, mod.ModuleID, mod.GenerationID)
		}
	case "remove":
		for _, m := range fs.Args() {
			if err := c.DeleteModule(ctx, d, m, "*"); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "module identity %s/%s removed\n", d, m)
		}
	case "list":
		mods, err := c.ListModules(ctx, d)
		if err != nil {
			return err
		}
		for _, m := range mods {
			auth := "no keys"
			if m.Authentication != nil && m.Authentication.Type == "sas" {
				auth = "sas keys"
			}
			fmt.Fprintf(stdout, "%s/%s\tgeneration %s\t%s\n", d, m.ModuleID, m.GenerationID, auth)
		}
	}
	return nil
}

// labTarget is what names the device a lab command acts on: the lab's
// state folder and the --device and --hub flags.
type labTarget struct{ dir, device, hub string }

func (t *labTarget) register(fs *flag.FlagSet) {
	fs.StringVar(&t.dir, "state-dir", "./lab-state", "the lab's state `folder` (the running lab hub's)")
	fs.StringVar(&t.device, "device", "", "edge device `ID` (default: the device lab up provisioned, else the lab's only device)")
	fs.StringVar(&t.hub, "hub", lab.Hub, "IoT hub `host` name, for the default device")
}

// labDevice returns the device a lab command is about: device when given,
// else the one lab up provisioned, else the lab's only device of hub.
func labDevice(dir, hub, device, command string) (string, error) {
	if device != "" {
		return device, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, lab.DeviceFile)); err == nil {
		if d := strings.TrimSpace(string(b)); d != "" {
			return d, nil // lab up's
		}
	}
	devs := lab.RegisteredDevices(dir, hub)
	if len(devs) != 1 {
		return "", cli.Usagef("%s: the lab has %d devices of %s: give --device", command, len(devs), hub)
	}
	return devs[0], nil
}
