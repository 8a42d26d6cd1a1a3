package debpkg_test

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/deploy/debpkg"
	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/module/settings"
)

var update = flag.Bool("update", false, "rewrite testdata/*.contents")

// when is the time of every test build: SOURCE_DATE_EPOCH 1767225600.
var when = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// all is the one build of every package, for every architecture, that the
// tests share: building is what takes the time.
var all struct {
	once sync.Once
	dir  string
	pkgs []debpkg.Package
	took time.Duration
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if all.dir != "" {
		os.RemoveAll(all.dir)
	}
	os.Exit(code)
}

func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// edgeDeployPackage runs the one command, "go run ./deploy package", at
// the time t into out and returns what it built. It runs as its own
// process: under the race detector, in this one, xz would take minutes.
func edgeDeployPackage(dir string, at time.Time, out string, args ...string) ([]debpkg.Package, error) {
	cmd := exec.Command("go", append([]string{"run", "-trimpath", "./deploy", "package", "--out", out, "--json"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", at.Unix()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go run ./deploy package %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var pkgs []debpkg.Package
	if err := json.Unmarshal(stdout, &pkgs); err != nil {
		return nil, fmt.Errorf("edge-deploy package --json: %v\n%s", err, stdout)
	}
	return pkgs, nil
}

// built returns the shared build of version 1.0.0.
func built(t *testing.T) []debpkg.Package {
	t.Helper()
	all.once.Do(func() {
		if all.dir, all.err = os.MkdirTemp("", "debpkg-test"); all.err != nil {
			return
		}
		start := time.Now()
		all.pkgs, all.err = edgeDeployPackage(root(t), when, all.dir, "--version", "1.0.0")
		all.took = time.Since(start)
	})
	if all.err != nil {
		t.Fatalf("Build: %v", all.err)
	}
	return all.pkgs
}

func find(t *testing.T, pkgs []debpkg.Package, name, arch string) debpkg.Package {
	t.Helper()
	i := slices.IndexFunc(pkgs, func(p debpkg.Package) bool { return p.Name == name && p.Arch == arch })
	if i < 0 {
		t.Fatalf("no %s for %s among %v", name, arch, pkgs)
	}
	return pkgs[i]
}

// Build makes edge-provisioner and edge-relay for every architecture and
// edge-deploy for amd64, named as Debian names them.
func TestBuild(t *testing.T) {
	pkgs := built(t)
	var names []string
	for _, p := range pkgs {
		names = append(names, filepath.Base(p.File))
		fi, err := os.Stat(p.File)
		if err != nil || fi.Size() != p.Size {
			t.Errorf("%s: size %d reported, %v on disk", p.File, p.Size, err)
		}
		t.Logf("%-40s %6.2f MB", filepath.Base(p.File), float64(p.Size)/1e6)
	}
	t.Logf("built in %v", all.took.Round(time.Millisecond))
	want := []string{
		"edge-provisioner_1.0.0_amd64.deb", "edge-provisioner_1.0.0_arm64.deb", "edge-provisioner_1.0.0_armhf.deb",
		"edge-relay_1.0.0_amd64.deb", "edge-relay_1.0.0_arm64.deb", "edge-relay_1.0.0_armhf.deb",
		"edge-deploy_1.0.0_amd64.deb",
	}
	if !slices.Equal(names, want) {
		t.Errorf("built %v, want %v", names, want)
	}
}

// The same commit and time give the same bytes; another time does not.
func TestReproducible(t *testing.T) {
	first := find(t, built(t), "edge-relay", "amd64")
	build := func(at time.Time) []byte {
		t.Helper()
		pkgs, err := edgeDeployPackage(root(t), at, t.TempDir(), "--version", "1.0.0", "--arch", "amd64", "--packages", "edge-relay")
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(pkgs[0].File)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want, err := os.ReadFile(first.File)
	if err != nil {
		t.Fatal(err)
	}
	if got := build(when); !bytes.Equal(got, want) {
		t.Errorf("a second build of %s differs: %d bytes, first %d", filepath.Base(first.File), len(got), len(want))
	}
	if got := build(when.Add(time.Second)); bytes.Equal(got, want) {
		t.Error("a build at another time gave the same bytes: the time is not in the package")
	}
}

// dpkgDeb runs dpkg-deb in UTC.
func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(peertest.Need(t, "dpkg-deb"), args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// Each package holds what testdata/NAME.contents lists, with the same
// modes and owners on every architecture, each file dated the build's
// time; its control fields and conffiles are as Debian reads them.
func TestContents(t *testing.T) {
	conffiles := map[string]string{
		"edge-provisioner": "/etc/edge-provisioner/config.toml\n",
		"edge-relay":       "/etc/edge-relay/config.toml\n",
	}
	stamp := when.Format("2006-01-02 15:04")
	for _, p := range built(t) {
		t.Run(p.Name+"_"+p.Arch, func(t *testing.T) {
			var got strings.Builder
			for _, line := range strings.Split(strings.TrimSpace(dpkgDeb(t, "--contents", p.File)), "\n") {
				// -rwxr-xr-x root/root  11116670 2026-01-01 00:00 ./usr/bin/edge-relay
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("dpkg-deb --contents: %q", line)
				}
				if date := f[3] + " " + f[4]; date != stamp {
					t.Errorf("%s dated %s, want %s", f[5], date, stamp)
				}
				fmt.Fprintln(&got, f[0], f[1], strings.Join(f[5:], " "))
			}
			golden := filepath.Join("testdata", p.Name+".contents")
			if *update && p.Arch == "amd64" {
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != string(want) {
				t.Errorf("dpkg-deb --contents %s:\n%s\nwant (%s):\n%s", filepath.Base(p.File), got.String(), golden, want)
			}

			fields := dpkgDeb(t, "--field", p.File, "Package", "Version", "Architecture", "Maintainer")
			wantFields := fmt.Sprintf("Package: %s\nVersion: 1.0.0\nArchitecture: %s\n", p.Name, p.Arch)
			if !strings.HasPrefix(fields, wantFields) || !strings.Contains(fields, "Maintainer: ") {
				t.Errorf("control fields:\n%s\nwant\n%s", fields, wantFields)
			}
			cmd := exec.Command("dpkg-deb", "--info", p.File, "conffiles")
			out, _ := cmd.Output() // exits 1 when there are none
			if string(out) != conffiles[p.Name] {
				t.Errorf("conffiles: %q, want %q", out, conffiles[p.Name])
			}
		})
	}
}

// The binaries of the arm packages are static executables for their
// machine, built for the baseline of Debian's port.
func TestArmBinaries(t *testing.T) {
	want := map[string]struct {
		machine elf.Machine
		goarch  [2]string // a build setting and its value
	}{
		"arm64": {elf.EM_AARCH64, [2]string{"GOARM64", "v8.0"}},
		"armhf": {elf.EM_ARM, [2]string{"GOARM", "7"}},
		"amd64": {elf.EM_X86_64, [2]string{"GOAMD64", "v1"}},
	}
	for _, p := range built(t) {
		if p.Name == "edge-deploy" {
			continue
		}
		t.Run(p.Name+"_"+p.Arch, func(t *testing.T) {
			bin := member(t, p.File, "./usr/bin/"+p.Name)
			f, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != want[p.Arch].machine {
				t.Errorf("ELF machine %v, want %v", f.Machine, want[p.Arch].machine)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Error("has a dynamic loader: not static")
				}
			}
			info, err := buildinfo.Read(bytes.NewReader(bin))
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			level := want[p.Arch].goarch
			if settings["CGO_ENABLED"] != "0" || settings[level[0]] != level[1] {
				t.Errorf("build settings %v, want CGO_ENABLED=0 and %s=%s", settings, level[0], level[1])
			}
		})
	}
}

// member returns the file name in the data of the package at path.
func member(t *testing.T, path, name string) []byte {
	t.Helper()
	cmd := exec.Command(peertest.Need(t, "dpkg-deb"), "--fsys-tarfile", path)
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s (%v)", path, name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// lintian finds nothing to warn of; each override is justified in
// debian/NAME.lintian-overrides.
func TestLintian(t *testing.T) {
	lintian := peertest.Need(t, "lintian")
	var files []string
	for _, p := range built(t) {
		files = append(files, p.File)
	}
	start := time.Now()
	cmd := exec.Command(lintian, append([]string{"--fail-on", "error,warning", "--display-info"}, files...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("lintian on %d packages in %v:\n%s", len(files), time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}

// The relay's packaged settings, manifests/relay.toml, load as edge-relay
// loads them and say what the unit needs: the state folder it may write.
func TestRelaySettings(t *testing.T) {
	fs := flag.NewFlagSet("edge-relay", flag.ContinueOnError)
	l := settings.NewLoader(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(root(t), "manifests", "relay.toml")}); err != nil {
		t.Fatal(err)
	}
	s, err := l.Load(func(string) string { return "" })
	if err != nil {
		t.Fatalf("manifests/relay.toml: %v", err)
	}
	if s.Data != "/var/lib/edge-relay" || s.MetricsAddr != settings.MetricsDevice {
		t.Errorf("manifests/relay.toml: data %q, metrics_addr %q; want /var/lib/edge-relay (the unit's StateDirectory), %s", s.Data, s.MetricsAddr, settings.MetricsDevice)
	}
}

// Build refuses what it cannot build before building anything.
func TestBuildRefuses(t *testing.T) {
	good := debpkg.Options{Dir: root(t), Out: t.TempDir(), Version: "1.0.0", Time: when}
	for _, tc := range []struct {
		name string
		edit func(*debpkg.Options)
	}{
		{"no version", func(o *debpkg.Options) { o.Version = "" }},
		{"version with a space", func(o *debpkg.Options) { o.Version = "1.0 beta" }},
		{"version not starting with a digit", func(o *debpkg.Options) { o.Version = "v1.0.0" }},
		{"no time", func(o *debpkg.Options) { o.Time = time.Time{} }},
		{"unknown architecture", func(o *debpkg.Options) { o.Arches = []string{"amd64", "sparc"} }},
		{"unknown package", func(o *debpkg.Options) { o.Packages = []string{"edgetpm"} }},
		{"edge-deploy for arm only", func(o *debpkg.Options) { o.Arches, o.Packages = []string{"arm64"}, []string{"edge-deploy"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			if pkgs, err := debpkg.Build(t.Context(), o); err == nil {
				t.Errorf("Build(%+v) = %v, want an error", o, pkgs)
			}
		})
	}
}
