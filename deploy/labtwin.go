package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/deploy/manifest"
	"github.com/edgetpm/edgetpm/internal/cli"
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
	if b, err := os.ReadFile(filepath.Join(*dir, lab.DeviceFile)); *device == "" && err == nil {
		*device = strings.TrimSpace(string(b)) // lab up's
	}
	if *device == "" {
		devs := lab.RegisteredDevices(*dir, *hub)
		if len(devs) != 1 {
			return cli.Usagef("lab twin set: the lab has %d devices of %s: give --device", len(devs), *hub)
		}
		*device = devs[0]
	}
	c, err := (&hubFlags{lab: *dir}).client(func(string) string { return "" })
	if err != nil {
		return err
	}
	patch, _ := json.Marshal(map[string]any{"properties": map[string]any{"desired": desired}})
	tw, err := c.UpdateTwin(ctx, *device, *module, patch)
	if err != nil {
		return err
	}
	var set struct {
		Properties struct {
			Desired struct {
				Version int64 `json:"$version"`
			} `json:"desired"`
		} `json:"properties"`
	}
	json.Unmarshal(tw, &set)
	version := set.Properties.Desired.Version
	fmt.Fprintf(stdout, "desired properties of %s/%s at version %d\n", *device, *module, version)
	if *wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	for {
		tw, err := c.Twin(ctx, *device, *module)
		if err != nil {
			return err
		}
		var rep struct {
			Properties struct {
				Reported struct {
					Configuration struct {
						Version int64  `json:"version"`
						Status  string `json:"status"`
						Reason  string `json:"reason"`
					} `json:"configuration"`
				} `json:"reported"`
			} `json:"properties"`
		}
		json.Unmarshal(tw, &rep)
		if r := rep.Properties.Reported.Configuration; r.Version >= version {
			if r.Status == "rejected" {
				return fmt.Errorf("%s/%s rejected version %d: %s", *device, *module, r.Version, r.Reason)
			}
			fmt.Fprintf(stdout, "%s/%s %s version %d\n", *device, *module, r.Status, r.Version)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%s did not report version %d within %v (is it running?)", *device, *module, version, *wait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
