package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/edgetpm/edgetpm/deploy/gobuild"
	"github.com/edgetpm/edgetpm/deploy/image"
)

// RelayImage is the reference of the relay image the lab builds.
const RelayImage = "edgetpm/edge-relay:lab"

// binaries are what the lab runs: the provisioner, and the relay as a
// binary or, for containerd, as an image archive.
type binaries struct {
	provisioner string
	relay       string // the binary (process mode)
	archive     string // the docker-archive of RelayImage (containerd mode)
}

// build finds or builds the binaries, and the relay image for containerd.
func (l *Lab) build(ctx context.Context) (binaries, error) {
	start := time.Now()
	var b binaries
	switch {
	case l.cfg.Bin != "":
		b = binaries{provisioner: filepath.Join(l.cfg.Bin, "edge-provisioner"), relay: filepath.Join(l.cfg.Bin, "edge-relay")}
		for _, f := range []string{b.provisioner, b.relay} {
			if _, err := os.Stat(f); err != nil {
				return b, fmt.Errorf("build: %w", err)
			}
		}
	case l.cfg.Source == "":
		exe, err := os.Executable()
		if err != nil {
			return b, fmt.Errorf("build: %w", err)
		}
		if b, err = findInstalled(exe); err != nil {
			return b, err
		}
		l.printf("build", "running the installed %s and %s", b.provisioner, b.relay)
	default:
		bin := l.path("bin")
		b = binaries{provisioner: filepath.Join(bin, "edge-provisioner"), relay: filepath.Join(bin, "edge-relay")}
		if err := gobuild.Build(ctx, gobuild.Options{Dir: l.cfg.Source, Package: "./provisioner", Out: b.provisioner}); err != nil {
			return b, err
		}
		if l.cfg.Containerd == "" {
			if err := gobuild.Build(ctx, gobuild.Options{Dir: l.cfg.Source, Package: "./module", Out: b.relay}); err != nil {
				return b, err
			}
		}
		l.printf("build", "edge-provisioner and edge-relay built from %s in %v", l.cfg.Source, since(start))
	}
	if l.cfg.Containerd == "" {
		return b, nil
	}
	start = time.Now()
	var prebuilt string
	if l.cfg.Source == "" {
		// Installed: the image holds the installed relay.
		prebuilt = b.relay
	}
	res, err := image.Build(ctx, image.Options{
		Binary:    prebuilt,
		Dir:       l.cfg.Source,
		Platforms: []string{"linux/" + goruntime.GOARCH + variant()},
		Name:      RelayImage,
		Out:       l.path("image"),
	})
	if err != nil {
		return b, fmt.Errorf("build the relay image: %w", err)
	}
	b.archive = res.Images[0].DockerArchive
	l.printf("image", "%s built without Docker in %v: %s", RelayImage, since(start), res.Images[0].Manifest)
	return b, nil
}

// findInstalled finds edge-provisioner and edge-relay installed beside
// exe (edge-deploy, symbolic links resolved), else both on PATH.
func findInstalled(exe string) (binaries, error) {
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	dir := filepath.Dir(exe)
	b := binaries{provisioner: filepath.Join(dir, "edge-provisioner"), relay: filepath.Join(dir, "edge-relay")}
	if isExecutable(b.provisioner) && isExecutable(b.relay) {
		return b, nil
	}
	p, perr := exec.LookPath("edge-provisioner")
	r, rerr := exec.LookPath("edge-relay")
	if perr != nil || rerr != nil {
		return binaries{}, fmt.Errorf("build: edge-provisioner and edge-relay are neither beside %s nor on PATH, and the current folder is not in the %s module: install the edge-provisioner and edge-relay packages, give --bin, or run lab up in the repository to build them", exe, modulePath)
	}
	return binaries{provisioner: p, relay: r}, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// modulePath is the Go module the lab builds from.
const modulePath = "github.com/edgetpm/edgetpm"

// findSource finds the root of the edgetpm module from the current folder
// up.
func findSource() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errNoSource
		}
		dir = parent
	}
}

// errNoSource is findSource's error outside the repository.
var errNoSource = errors.New("the current folder is not in the " + modulePath + " module")

// variant is the platform variant of this machine, as image.ParsePlatform
// takes it.
func variant() string {
	if goruntime.GOARCH == "arm" {
		return "/v7"
	}
	return ""
}

// since is the time since start, rounded for a progress line.
func since(start time.Time) time.Duration {
	return time.Since(start).Round(time.Millisecond)
}
