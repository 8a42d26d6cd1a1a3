package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/deploy/manifest"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/module/twin"
)

// labTwinSet changes desired properties of a module of the running lab
// through the hub's service API, as an operator would in IoT Hub, and
// waits for the module to report the version applied or rejected.
func labTwinSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab twin set", flag.ContinueOnError)
	dir := fs.String("state-dir", "./lab-state", "the lab's state `folder` (the running lab hub's)")
	device := fs.String("device", "", "edge device `ID` (default: the device lab up provisioned, else the lab's only device)")
	module := fs.String("module", "relay", "module `ID`")
	hub := fs.String("hub", "lab-hub.azure-devices.net", "IoT hub `host` name, for the default device")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the module's report (0: do not wait)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab twin set [flags] KEY=VALUE...\n\nChange desired properties of a module in the running lab and show it applying them.\nDotted keys nest (batching.enabled=true); a VALUE that is JSON is taken as JSON, null deletes,\nanything else is a string.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("lab twin set: want KEY=VALUE")
	}
	desired := map[string]any{}
	for _, kv := range fs.Args() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cli.Usagef("lab twin set: %q: want KEY=VALUE", kv)
		}
		var val any = v
		if json.Valid([]byte(v)) {
			json.Unmarshal([]byte(v), &val)
		}
		if err := manifest.Set(desired, k, val); err != nil {
			return cli.Usagef("lab twin set: %v", err)
		}
	}
	d, err := labDevice(*dir, *hub, *device, "lab twin set")
	if err != nil {
		return err
	}
	*device = d
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	version, err := lab.SetDesired(ctx, c, *device, *module, desired)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "desired properties of %s/%s at version %d\n", *device, *module, version)
	if *wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	r, err := lab.WaitReported(ctx, c, *device, *module, version)
	switch {
	case errors.Is(err, lab.ErrNoReport):
		return fmt.Errorf("%s/%s did not report version %d within %v (is it running?)", *device, *module, version, *wait)
	case err != nil:
		return err
	case r.Status == twin.StatusRejected:
		return fmt.Errorf("%s/%s rejected version %d: %s", *device, *module, r.Version, r.Reason)
	}
	fmt.Fprintf(stdout, "%s/%s %s version %d\n", *device, *module, r.Status, r.Version)
	return nil
}
