package edgetpm_test

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/edgetpm/edgetpm/"

// What ships to a device (edge-provisioner, edge-relay) links no emulator,
// no test harness and no TPM simulator: those are for the lab (edge-deploy)
// and tests.
var forbidden = []string{
	module + "internal/emulator/",
	module + "internal/testharness/",
	module + "internal/mssim/", // simulator code stays with the lab; provisioner/tpm's mssim client holds its own codes
	"github.com/google/go-tpm-tools/simulator",
	"github.com/google/go-tpm/tpm2/transport/simulator",
}

func TestProductImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./provisioner/...", "./module/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed only %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(dep+"/", strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("product code depends on %s", dep)
			}
		}
	}
}

// The product binaries build without cgo into static executables that need
// nothing on a device beyond the kernel.
func TestStaticProductBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./provisioner", "./module")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	for _, name := range []string{"provisioner", "module"} {
		path := filepath.Join(dir, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Fatal(err)
		}
		if len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v", name, libs)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a dynamic loader", name)
			}
		}
		f.Close()
		info, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range info.Settings {
			if s.Key == "CGO_ENABLED" && s.Value != "0" {
				t.Errorf("%s built with CGO_ENABLED=%s", name, s.Value)
			}
		}
		for _, d := range info.Deps {
			if d.Path == "github.com/google/go-tpm-tools" {
				t.Errorf("%s links %s %s", name, d.Path, d.Version)
			}
		}
	}
}
