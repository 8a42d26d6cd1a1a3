package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/lab"
	"github.com/edgetpm/edgetpm/deploy/manifest"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/hubservice"
	"github.com/edgetpm/edgetpm/module/twin"
)

// labTwinSet changes desired properties of a module of the running lab
// through the hub's service API, as an operator would in IoT Hub, and
// waits for the module to report the version applied or rejected.
func labTwinSet(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab twin set", flag.ContinueOnError)
	t := &labTarget{}
	t.register(fs)
	dir, device, hub := &t.dir, &t.device, &t.hub
	module := fs.String("module", "relay", "module `ID` (\"\": the device twin)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the module's report (0: do not wait)")
	etag := fs.String("etag", "", "patch only while the twin's ETag (lab twin show's \"etag\") is `ETAG` (If-Match)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab twin set [flags] (KEY=VALUE...|JSON|FILE|-)\n\nChange desired properties of a module (--module \"\": the device) in the running lab and show it\napplying them. Dotted keys nest (batching.enabled=true); a VALUE that is JSON is taken as JSON,\nnull deletes, anything else is a string. A JSON object, a FILE holding one, or - (standard input)\nis the desired properties patch itself.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	desired, err := desiredPatch(fs.Args(), stdin)
	if err != nil {
		return err
	}
	dev, err := labDevice(*dir, *hub, *device, "lab twin set")
	if err != nil {
		return err
	}
	*device = dev
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	version, err := lab.SetDesired(ctx, c, *device, *module, desired, *etag)
	var se *hubservice.ServiceError
	if errors.As(err, &se) && se.HTTPStatus == 412 {
		return fmt.Errorf("the twin of %s changed since ETag %s: %w", hubservice.Identity(*device, *module), *etag, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "desired properties of %s at version %d\n", hubservice.Identity(*device, *module), version)
	if *wait <= 0 || *module == "" { // a device twin has no reconciler to report
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

// desiredPatch reads the desired properties patch of lab twin set from
// its arguments: KEY=VALUE pairs, or one JSON object, FILE or - (stdin).
func desiredPatch(args []string, stdin io.Reader) (map[string]any, error) {
	if len(args) == 0 {
		return nil, cli.Usagef("lab twin set: want KEY=VALUE..., JSON, FILE or -")
	}
	isJSON := func(a string) bool { return strings.HasPrefix(strings.TrimSpace(a), "{") || json.Valid([]byte(a)) }
	if a := args[0]; (len(args) == 1 && !strings.Contains(a, "=")) || isJSON(a) {
		if len(args) > 1 {
			return nil, cli.Usagef("lab twin set: a JSON patch, FILE or - stands alone")
		}
		var data []byte
		var err error
		switch {
		case a == "-":
			data, err = io.ReadAll(io.LimitReader(stdin, maxPatch+1))
		case isJSON(a):
			data = []byte(a)
		default:
			data, err = os.ReadFile(a)
			if errors.Is(err, os.ErrNotExist) {
				return nil, cli.Usagef("lab twin set: %q is neither KEY=VALUE nor a file", a)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("lab twin set: read the patch: %w", err)
		}
		if len(data) > maxPatch {
			return nil, cli.Usagef("lab twin set: the patch is larger than %d bytes", maxPatch)
		}
		var desired map[string]any
		if err := json.Unmarshal(data, &desired); err != nil || desired == nil {
			return nil, cli.Usagef("lab twin set: the patch is not a JSON object (%v)", err)
		}
		return desired, nil
	}
	desired := map[string]any{}
	for _, kv := range args {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, cli.Usagef("lab twin set: %q: want KEY=VALUE", kv)
		}
		var val any = v
		if json.Valid([]byte(v)) {
			json.Unmarshal([]byte(v), &val)
		}
		if err := manifest.Set(desired, k, val); err != nil {
			return nil, cli.Usagef("lab twin set: %v", err)
		}
	}
	return desired, nil
}

// maxPatch bounds a desired properties patch read by lab twin set: IoT
// Hub's limit on a twin's desired properties is 32 KB
// (learn.microsoft.com azure/iot-hub/iot-hub-devguide-device-twins, "Twin size").
const maxPatch = 32 * 1024

// labTwinShow prints the twin of a module (or device) of the running lab.
func labTwinShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy lab twin show", flag.ContinueOnError)
	t := &labTarget{}
	t.register(fs)
	dir, device, hub := &t.dir, &t.device, &t.hub
	module := fs.String("module", "relay", "module `ID` (\"\": the device twin)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy lab twin show [flags]\n\nPrint the twin of a module (--module \"\": the device) of the running lab, as JSON.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return cli.Usagef("lab twin show: unexpected %q", fs.Arg(0))
	}
	dev, err := labDevice(*dir, *hub, *device, "lab twin show")
	if err != nil {
		return err
	}
	c, err := lab.ServiceClient(*dir)
	if err != nil {
		return err
	}
	tw, err := c.Twin(ctx, dev, *module)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, indentJSON(tw))
	return err
}
