package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/provisioner/settings"
)

// scripts/install.sh lays out the binary, the example settings, the state
// folder and the unit, and keeps an operator's settings on a reinstall.
func TestInstallScript(t *testing.T) {
	prefix := t.TempDir()
	bin := filepath.Join(t.TempDir(), "edge-provisioner")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	install := func() {
		t.Helper()
		out, err := exec.Command("bash", "../scripts/install.sh", "--binary", bin, "--prefix", prefix).CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
	}
	install()
	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/edge-provisioner":              0o755,
		"etc/edge-provisioner/config.toml":            0o644,
		"var/lib/edge-provisioner":                    0o700 | os.ModeDir,
		"etc/systemd/system/edge-provisioner.service": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(prefix, path))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode(), err, mode)
		}
	}
	// The unit runs the binary it installed, not the package's.
	unit, _ := os.ReadFile(filepath.Join(prefix, "etc/systemd/system/edge-provisioner.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/edge-provisioner provision") {
		t.Errorf("the installed unit does not run /usr/local/bin/edge-provisioner:\n%s", unit)
	}
	// Without a package, a binary or --from-source it installs nothing.
	for _, args := range [][]string{{"--prefix", prefix}, {"--binary", bin, "--from-source", "--prefix", prefix}} {
		cmd := exec.Command("bash", append([]string{"../scripts/install.sh"}, args...)...)
		if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "FILE.deb") {
			t.Errorf("install.sh %v: %v, want exit 2 and its usage\n%s", args, err, out)
		}
	}
	// Packages never enable their units: --no-enable with them is refused,
	// not ignored.
	deb := filepath.Join(t.TempDir(), "edge-provisioner_1.0.0_amd64.deb")
	if err := os.WriteFile(deb, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../scripts/install.sh", deb, "--no-enable")
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "--no-enable") {
		t.Errorf("install.sh FILE.deb --no-enable: %v, want exit 2 naming --no-enable\n%s", err, out)
	}
	// The example settings it installs load as they are.
	s := settings.Defaults()
	data, _ := os.ReadFile(filepath.Join(prefix, "etc/edge-provisioner/config.toml"))
	if err := settings.Parse("config.toml", data, &s); err != nil {
		t.Fatalf("installed settings: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("installed settings: %v", err)
	}
	// It documents the defaults, so it says what they are.
	want := settings.Defaults()
	want.DPS.IDScope = "0ne00000000"
	if len(s.Images.Files) == 0 {
		s.Images.Files = nil // files = [] in the example
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("the example settings are not the defaults:\n%+v\nwant\n%+v", s, want)
	}

	mine := []byte("[dps]\nid_scope = \"0ne00MINE\"\n")
	os.WriteFile(filepath.Join(prefix, "etc/edge-provisioner/config.toml"), mine, 0o644)
	install()
	if got, _ := os.ReadFile(filepath.Join(prefix, "etc/edge-provisioner/config.toml")); string(got) != string(mine) {
		t.Errorf("a reinstall replaced the operator's settings with:\n%s", got)
	}
}

// With --prefix, the next steps name what was installed under it (the
// binary and the settings file there, not /etc's), and --from-source
// leaves no build folder behind in the temporary directory.
// Paths are taken from where the operator runs the script, not from the
// repository it lives in: a relative --binary and --prefix from another
// folder.
func TestInstallScriptRelativePaths(t *testing.T) {
	script, err := filepath.Abs("../scripts/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "edge-provisioner"), []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script, "--binary", "edge-provisioner", "--prefix", "root")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh --binary edge-provisioner --prefix root, in %s: %v\n%s", work, err, out)
	}
	if _, err := os.Stat(filepath.Join(work, "root/usr/local/bin/edge-provisioner")); err != nil {
		t.Errorf("not installed under the operator's ./root: %v", err)
	}
}

func TestInstallScriptPrefix(t *testing.T) {
	prefix, tmp, tools := t.TempDir(), t.TempDir(), t.TempDir()
	// A stand-in go that "builds" by writing the -o file: the script's
	// handling of its folder is what is tested, not Go.
	fakeGo := "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then printf '#!/bin/sh\\n' > \"$2\"; fi; shift; done\n"
	if err := os.WriteFile(filepath.Join(tools, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../scripts/install.sh", "--from-source", "--prefix", prefix)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "PATH="+tools+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh --from-source --prefix: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(prefix, "usr/local/bin/edge-provisioner")); err != nil {
		t.Errorf("the built binary was not installed: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("install.sh left %v in the temporary directory", left)
	}
	bin, conf := filepath.Join(prefix, "usr/local/bin/edge-provisioner"), filepath.Join(prefix, "etc/edge-provisioner/config.toml")
	for _, want := range []string{bin + " identity --config " + conf, "set dps.id_scope in " + conf, bin + " doctor --config " + conf, bin + " provision --config " + conf} {
		if !strings.Contains(string(out), want) {
			t.Errorf("install.sh --prefix says:\n%s\nwant it to say %q", out, want)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " /etc/") || strings.Contains(line, "reboot") {
			t.Errorf("install.sh --prefix says %q, which is not what it installed", line)
		}
	}
}
