// Package gobuild runs the go command to build edgetpm's binaries as they
// ship: reproducible, with no path, VCS stamp or build ID that would differ
// between builders, and with the builder's own Go settings kept out. The
// module image and the .deb packages both build through it, so one build of
// one commit gives the same bytes in both.
package gobuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// Options says what Build builds.
type Options struct {
	// Dir is the root of the Go module; default the current folder.
	Dir string
	// Package is the main package, relative to Dir ("./provisioner").
	Package string
	// Out is the file written.
	Out string
	// GOOS is the target system; default linux.
	GOOS string
	// Arch is the target as GOARCH and its level, e.g.
	// {"GOARCH=arm", "GOARM=7"}.
	Arch []string
	// Cgo links C code (edge-deploy's reference TPM). Without it the
	// binary is static and needs nothing beyond the kernel.
	Cgo bool
}

// Build runs go build for opts with the go command on PATH.
func Build(ctx context.Context, opts Options) error {
	goos := opts.GOOS
	if goos == "" {
		goos = "linux"
	}
	cgo := "CGO_ENABLED=0"
	if opts.Cgo {
		cgo = "CGO_ENABLED=1"
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid="}
	if opts.Cgo {
		// Position independent, as Debian builds every dynamic executable.
		args = append(args, "-buildmode=pie")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", opts.Out, opts.Package)...)
	cmd.Dir = opts.Dir
	// The builder's own settings must not reach the binary: the same
	// sources give the same bytes on every machine. GOAMD64 and GOARM64
	// are pinned to the baseline (Arch may raise them) so that a builder's
	// environment cannot make a binary that older CPUs refuse.
	cmd.Env = append(os.Environ(), cgo, "GOOS="+goos,
		"GOFLAGS=", "GOEXPERIMENT=", "GOWORK=off", "GOTOOLCHAIN=local",
		"GOAMD64=v1", "GOARM64=v8.0", "GO386=sse2", "GOPPC64=power8", "GORISCV64=rva20u64")
	cmd.Env = append(cmd.Env, opts.Arch...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s %v: %w\n%s", opts.Package, goos, opts.Arch, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
