package debpkg_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// run runs a command that must succeed and returns its stdout.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// The amd64 packages install on this machine with dpkg and run from there:
// edge-provisioner reads a TPM (swtpm), edge-relay answers --help, and
// edge-deploy runs the lab from outside any source tree with the installed
// binaries. A newer build installs over them and keeps an operator's edits
// to the settings; removal and purge leave only what docs/device-install.md
// says stays.
func TestInstall(t *testing.T) {
	peertest.NeedRoot(t, "dpkg -i")
	dpkg := peertest.Need(t, "dpkg")
	pkgs := built(t)
	names := []string{"edge-deploy", "edge-relay", "edge-provisioner"}
	for _, n := range names {
		if err := exec.Command("dpkg-query", "-W", n).Run(); err == nil {
			if os.Getenv("CI") == "" {
				t.Skipf("%s is installed on this machine; the test installs and purges its own", n)
			}
			run(t, "", dpkg, "--purge", n)
		}
	}
	t.Cleanup(func() { exec.Command(dpkg, append([]string{"--purge"}, names...)...).Run() })
	var debs []string
	for _, n := range names {
		debs = append(debs, find(t, pkgs, n, "amd64").File)
	}
	install := func(files ...string) {
		t.Helper()
		start := time.Now()
		run(t, "", dpkg, append([]string{"--install"}, files...)...)
		t.Logf("dpkg --install %d packages in %v", len(files), time.Since(start).Round(time.Millisecond))
	}
	install(debs...)
	// The maintainer scripts can run again: a reinstall of the same build.
	install(debs...)

	t.Run("Layout", func(t *testing.T) {
		for path, mode := range map[string]os.FileMode{
			"/usr/bin/edge-provisioner":         0o755,
			"/usr/bin/edge-relay":               0o755,
			"/usr/bin/edge-deploy":              0o755,
			"/etc/edge-provisioner/config.toml": 0o644,
			"/etc/edge-relay/config.toml":       0o644,
			"/var/lib/edge-provisioner":         0o700 | os.ModeDir,
			"/var/lib/edge-relay":               0o700 | os.ModeDir,
		} {
			if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
				t.Errorf("%s: %v (%v), want %v", path, fi.Mode(), err, mode)
			}
		}
		groups := run(t, "", "id", "-nG", "edge-relay")
		if !slices.Contains(strings.Fields(groups), "tss") {
			t.Errorf("edge-relay is in %q, want tss", groups)
		}
		if out := run(t, "", "stat", "-c", "%U:%G", "/var/lib/edge-relay"); strings.TrimSpace(out) != "edge-relay:edge-relay" {
			t.Errorf("/var/lib/edge-relay belongs to %s", out)
		}
	})

	t.Run("Units", func(t *testing.T) {
		analyze := peertest.Need(t, "systemd-analyze")
		cmd := exec.Command(analyze, "verify", "/usr/lib/systemd/system/edge-provisioner.service", "/usr/lib/systemd/system/edge-relay.service")
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	t.Run("Run", func(t *testing.T) {
		sw := tpmtest.StartSwtpm(t)
		var id struct{ RegistrationID, EndorsementKey string }
		if err := json.Unmarshal([]byte(run(t, "", "/usr/bin/edge-provisioner", "identity", "--tpm", sw.URI, "--json")), &id); err != nil || id.RegistrationID == "" || id.EndorsementKey == "" {
			t.Errorf("edge-provisioner identity --json: %+v, %v", id, err)
		}
		if out := run(t, "", "/usr/bin/edge-relay", "--help"); !strings.Contains(out, "usage: edge-relay") {
			t.Errorf("edge-relay --help:\n%s", out)
		}
		// From a folder outside any source tree, on the installed binaries.
		dir := t.TempDir()
		start := time.Now()
		out := run(t, dir, "/usr/bin/edge-deploy", "lab", "up", "--duration", "10s", "--state-dir", filepath.Join(dir, "lab"), "--json")
		t.Logf("lab up --duration 10s in %v", time.Since(start).Round(time.Millisecond))
		var s struct{ MessagesUpstream, MessagesPublished int64 }
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.MessagesUpstream == 0 {
			t.Errorf("lab up summary %+v, %v:\n%s", s, err, out)
		}
		if exists(filepath.Join(dir, "lab", "bin")) {
			t.Error("lab up built binaries instead of running the installed ones")
		}
	})

	// The operator edits the settings and enables the units.
	edits := map[string]string{}
	for _, f := range []string{"/etc/edge-provisioner/config.toml", "/etc/edge-relay/config.toml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		edits[f] = string(b) + "# the operator's edit\n"
		if err := os.WriteFile(f, []byte(edits[f]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"edge-provisioner.service", "edge-relay.service"} {
		run(t, "", "systemctl", "enable", u)
	}
	state := "/var/lib/edge-provisioner/assignment.json"
	if err := os.WriteFile(state, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("Upgrade", func(t *testing.T) {
		newer, err := edgeDeployPackage(root(t), when.Add(time.Hour), t.TempDir(), "--version", "1.0.1", "--arch", "amd64", "--packages", "edge-provisioner,edge-relay")
		if err != nil {
			t.Fatal(err)
		}
		install(newer[0].File, newer[1].File)
		for _, n := range []string{"edge-provisioner", "edge-relay"} {
			if v := run(t, "", "dpkg-query", "-W", "-f", "${Version}", n); v != "1.0.1" {
				t.Errorf("%s %s installed after the upgrade, want 1.0.1", n, v)
			}
		}
		for f, want := range edits {
			if b, _ := os.ReadFile(f); string(b) != want {
				t.Errorf("the upgrade replaced the operator's %s with:\n%s", f, b)
			}
		}
		if !exists(state) {
			t.Errorf("the upgrade lost %s", state)
		}
		if !exists("/etc/systemd/system/multi-user.target.wants/edge-relay.service") {
			t.Error("the upgrade disabled edge-relay.service")
		}
	})

	wants := []string{"/etc/systemd/system/multi-user.target.wants/edge-relay.service", "/etc/systemd/system/multi-user.target.wants/edge-provisioner.service"}
	run(t, "", dpkg, append([]string{"--remove"}, names...)...)
	t.Run("Remove", func(t *testing.T) {
		for _, f := range []string{"/usr/bin/edge-provisioner", "/usr/bin/edge-relay", "/usr/bin/edge-deploy",
			"/usr/lib/systemd/system/edge-relay.service", "/usr/lib/systemd/system/edge-provisioner.service"} {
			if exists(f) {
				t.Errorf("%s is left after remove", f)
			}
		}
		// Removal keeps the settings, the state and the enablement, for a
		// reinstall; the units are masked meanwhile, as debhelper does.
		for _, u := range []string{"edge-relay.service", "edge-provisioner.service"} {
			if target, err := os.Readlink("/etc/systemd/system/" + u); err != nil || target != "/dev/null" {
				t.Errorf("%s is not masked after remove: %q, %v", u, target, err)
			}
		}
		for f := range edits {
			if !exists(f) {
				t.Errorf("remove deleted %s", f)
			}
		}
		if !exists(state) {
			t.Errorf("remove deleted %s", state)
		}
		if !exists(wants[0]) {
			t.Errorf("remove forgot that edge-relay.service was enabled: %s is gone", wants[0])
		}
	})

	run(t, "", dpkg, append([]string{"--purge"}, names...)...)
	t.Run("Purge", func(t *testing.T) {
		for _, n := range names {
			if out, _ := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Status}", n).Output(); len(out) > 0 && string(out) != "not-installed" {
				t.Errorf("%s is %s after purge", n, out)
			}
		}
		for _, f := range append(wants, "/etc/systemd/system/edge-relay.service", "/etc/systemd/system/edge-provisioner.service",
			"/etc/edge-provisioner", "/etc/edge-relay", "/var/lib/edge-provisioner", "/var/lib/edge-relay",
			"/usr/share/doc/edge-relay", "/usr/share/man/man1/edge-relay.1.gz", "/usr/lib/sysusers.d/edge-relay.conf",
			"/var/lib/systemd/deb-systemd-helper-enabled/edge-relay.service.dsh-also") {
			if exists(f) {
				t.Errorf("%s is left after purge", f)
			}
		}
		// What stays, as docs/device-install.md says: the system user.
		if err := exec.Command("getent", "passwd", "edge-relay").Run(); err != nil {
			t.Errorf("the system user edge-relay went: %v", err)
		}
	})
}
