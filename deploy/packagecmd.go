package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/debpkg"
	"github.com/edgetpm/edgetpm/internal/cli"
)

const packageUsage = `usage: edge-deploy package [flags]

Build the Debian packages from the repository, without Docker:
edge-provisioner and edge-relay for devices (amd64, arm64, armhf) and
edge-deploy for operators' workstations (amd64, with the lab's reference
TPM), written to --out as NAME_VERSION_ARCH.deb. Every file carries one
time: $SOURCE_DATE_EPOCH, else the time of the commit checked out, so that
building a commit twice gives the same bytes.

`

func packageCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("edge-deploy package", flag.ContinueOnError)
	out := fs.String("out", "dist", "`folder` the packages are written to")
	version := fs.String("version", "0.1.0", "Debian `version` of the packages")
	arch := fs.String("arch", strings.Join(debpkg.DefaultArches, ","), "comma-separated Debian `architectures`")
	only := fs.String("packages", strings.Join(debpkg.Names(), ","), "comma-separated `packages` to build")
	src := fs.String("src", "", "`folder` of the repository's go.mod (default: found from the working folder up)")
	asJSON := fs.Bool("json", false, "print the packages as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), packageUsage)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	root, err := repoRoot(*src)
	if err != nil {
		return err
	}
	t, err := sourceTime(ctx, root, getenv)
	if err != nil {
		return err
	}
	start := time.Now()
	pkgs, err := debpkg.Build(ctx, debpkg.Options{
		Dir: root, Out: *out, Version: *version, Time: t,
		Arches: strings.Split(*arch, ","), Packages: strings.Split(*only, ","),
		Log: consoleLog(stderr),
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(pkgs)
	}
	for _, p := range pkgs {
		fmt.Fprintf(stdout, "%-17s %-6s %6.2f MB  %s\n", p.Name, p.Arch, float64(p.Size)/1e6, p.File)
	}
	fmt.Fprintf(stdout, "built in %v, files dated %s\n", time.Since(start).Round(time.Millisecond), t.Format(time.RFC3339))
	return nil
}

// sourceTime is $SOURCE_DATE_EPOCH, else the time of the commit checked
// out in root.
func sourceTime(ctx context.Context, root string, getenv func(string) string) (time.Time, error) {
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil || sec <= 0 {
			return time.Time{}, cli.Usagef("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return time.Time{}, cli.Usagef("no commit time in %s (%v): set SOURCE_DATE_EPOCH", root, err)
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("git log: commit time %q: %w", out, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
