package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edgetpm/edgetpm/deploy/manifest"
	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/cli"
)

// setFlags collects repeated key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// renderCmd fills a deployment template with values and prints the
// deployment, checked.
func renderCmd(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy render", flag.ContinueOnError)
	tmpl := fs.String("template", "", "the deployment template `FILE` (JSON with Go template actions)")
	values := fs.String("values", "", "values `FILE` (TOML or JSON)")
	out := fs.String("out", "-", "write the deployment to `FILE`; - for stdout")
	var sets setFlags
	fs.Var(&sets, "set", "a value `KEY=VALUE` (dotted keys nest), over the values file; repeatable (secrets belong in the values file: the command line shows in process lists)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy render --template FILE [--values FILE] [--set KEY=VALUE]... [--out FILE]\n\nRender a deployment manifest: createOptions split into 512-character chunks, images pinned to digests, then validated.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *tmpl == "" {
		return cli.Usagef("render: want --template")
	}
	t, err := os.ReadFile(*tmpl)
	if err != nil {
		return err
	}
	vals := manifest.Values{}
	if *values != "" {
		if vals, err = manifest.LoadValues(*values); err != nil {
			return err
		}
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return cli.Usagef("render: --set %q: want KEY=VALUE", kv)
		}
		if err := manifest.SetValue(vals, k, v); err != nil {
			return err
		}
	}
	doc, err := manifest.Render(t, vals)
	if err != nil {
		return fmt.Errorf("%s: %w", *tmpl, err)
	}
	if *out == "-" {
		_, err = stdout.Write(doc)
		return err
	}
	// 0600: a deployment may hold registry credentials.
	return atomicfile.WriteFile(*out, doc, 0o600)
}

// validateCmd checks deployment files and prints every problem with its
// JSON path.
func validateCmd(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy validate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edge-deploy validate FILE...\n\nCheck deployment manifests (standard or layered, or a whole configuration) against the rules of edgeAgent, edgeHub and IoT Hub.\n\n")
		fs.PrintDefaults()
	}
	if err := cli.ParseArgs(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("validate: want one or more files")
	}
	bad := 0
	for _, f := range fs.Args() {
		doc, err := os.ReadFile(f)
		if err == nil {
			err = manifest.Validate(doc)
		}
		if err == nil {
			fmt.Fprintf(stdout, "%s: ok\n", f)
			continue
		}
		bad++
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stdout, "%s: %s\n", f, line)
		}
	}
	if bad > 0 {
		return errors.New(plural(bad, "file does not validate", "files do not validate"))
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
