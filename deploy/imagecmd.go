package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgetpm/edgetpm/deploy/image"
	"github.com/edgetpm/edgetpm/internal/cli"
)

const imageUsage = `usage: edge-deploy image build [flags]

Build the edge-relay module image without Docker, reproducibly: a static
binary per platform in a scratch image, written to --out as an OCI image
layout of all platforms (edge-relay.oci.tar) and one docker-archive per
platform (edge-relay-<os>-<arch>[-<variant>].docker.tar), ready for
"edge-provisioner image load" or "docker load".

`

// runImage runs "edge-deploy image ..." (args without "image").
func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "build" {
		return imageBuild(ctx, args[1:], stdout, stderr)
	}
	return cli.Usagef("image: want build")
}

// platformFlag collects repeated --platform values, checked as they come.
type platformFlag []string

func (p *platformFlag) String() string { return strings.Join(*p, ",") }

func (p *platformFlag) Set(v string) error {
	if _, err := image.ParsePlatform(v); err != nil {
		return err
	}
	*p = append(*p, v)
	return nil
}

func imageBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge-deploy image build", flag.ContinueOnError)
	out := fs.String("out", "dist", "`folder` the archives are written to")
	var platforms platformFlag
	fs.Var(&platforms, "platform", "`os/arch[/variant]` to build for; repeatable (default linux/amd64, linux/arm64, linux/arm/v7)")
	name := fs.String("name", "edgetpm/edge-relay:dev", "image `reference` the archives name")
	version := fs.String("version", "dev", "`version` label (org.opencontainers.image.version)")
	revision := fs.String("revision", "", "source `revision` label, e.g. a commit (org.opencontainers.image.revision)")
	src := fs.String("src", "", "`folder` of the repository's go.mod (default: found from the working folder up)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), imageUsage)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	root, err := repoRoot(*src)
	if err != nil {
		return err
	}
	log := consoleLog(stderr)
	res, err := image.Build(ctx, image.Options{
		Dir:       root,
		Platforms: platforms,
		Name:      *name,
		Version:   *version,
		Revision:  *revision,
		Out:       *out,
		Log:       log,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	for _, img := range res.Images {
		fmt.Fprintf(stdout, "%-13s %s %6.2f MB  %s\n", img.Platform, img.Manifest, float64(img.Size)/1e6, img.DockerArchive)
	}
	fmt.Fprintf(stdout, "%-13s %s %9s  %s\n", "OCI index", res.Index, "", res.OCIArchive)
	return nil
}

// repoRoot returns src, or the first folder from the working folder up
// that holds a go.mod.
func repoRoot(src string) (string, error) {
	if src != "" {
		if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
			return "", cli.Usagef("--src %s: %v", src, err)
		}
		return src, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find go.mod: %w", err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.mod"))
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("find go.mod: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", cli.Usagef("no go.mod in the working folder or above it: run in the repository or give --src")
		}
		dir = parent
	}
}
