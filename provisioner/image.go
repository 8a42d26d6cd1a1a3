package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/provisioner/containerd"
	"github.com/edgetpm/edgetpm/provisioner/settings"
)

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer, getenv env) error {
	if len(args) == 0 || args[0] != "load" {
		return cli.Usagef("usage: edge-provisioner image load [--containerd-address PATH] [--containerd-namespace NAME] [--json] FILE...")
	}
	fs := newFlagSet("image load", "image load [--containerd-address PATH] [--containerd-namespace NAME] [--docker-socket PATH] [--json] FILE...\n\nSide-loads docker-archive or OCI layout tars (plain or gzip) into containerd,\nor through Docker when Docker keeps its images in its classic store.")
	l := settings.NewLoader(fs, settings.ContainerdGroup)
	asJSON := fs.Bool("json", false, "print JSON")
	files, s, help, err := loadSettingsArgs(fs, l, args[1:], stdout, getenv)
	if help || err != nil {
		return err
	}
	if len(files) == 0 {
		return cli.Usagef("image load needs at least one FILE")
	}
	c, err := newContainerd(ctx, s, progressLog(stderr))
	if err != nil {
		return err
	}
	defer c.Close()
	var results []*containerd.LoadResult
	for _, f := range files {
		res, err := c.Load(ctx, f)
		if err != nil {
			return err
		}
		results = append(results, res)
		if !*asJSON {
			fmt.Fprintf(stdout, "%s (%s) via %s: %s\n", res.Path, res.Format, res.Via, res.Reason)
			for _, img := range res.Images {
				state := "loaded"
				if img.Skipped {
					state = "already present"
				}
				fmt.Fprintf(stdout, "  %s@%s %s\n", img.Name, img.Digest, state)
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	return nil
}
