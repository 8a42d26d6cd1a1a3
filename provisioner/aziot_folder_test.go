package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/cli"
)

// Without the folder of config.toml, provision fails at the config.toml
// step and asks whether IoT Edge is installed, before writing anything;
// doctor's remedy for the missing file says the same, not "run provision".
func TestProvisionWithoutAziotFolder(t *testing.T) {
	w := newWorld(t)
	calls := fakeApplyTool(t, 0)
	missing := filepath.Join(t.TempDir(), "etc-aziot", "config.toml")
	w.env["EDGE_AZIOT_CONFIG"] = missing
	for _, args := range [][]string{nil, {"--dry-run"}} {
		r, progress, err := provision(t, w, args...)
		if cli.ExitCode(err) != exitConfig {
			t.Fatalf("provision %q: exit %d (%v), want %d\n%s", args, cli.ExitCode(err), err, exitConfig, progress)
		}
		last := r.Steps[len(r.Steps)-1]
		for _, want := range []string{filepath.Dir(missing), "aziot-edge", "installed", "aziot.config"} {
			if !strings.Contains(last.Detail, want) {
				t.Errorf("provision %q: config.toml step says %q, want it to name %q", args, last.Detail, want)
			}
		}
		if strings.Contains(last.Detail, ".tmp") {
			t.Errorf("provision %q: config.toml step says %q, an internal temp file", args, last.Detail)
		}
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Errorf("provision made %s: %v", filepath.Dir(missing), err)
	}
	if _, err := os.Stat(calls); !os.IsNotExist(err) {
		t.Error("provision applied without config.toml")
	}

	out, _, _ := runCLI(t, w.env, "doctor", "--json")
	var checks []check
	if err := json.Unmarshal([]byte(out), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	found := false
	for _, c := range checks {
		if c.Name != "config.toml" {
			continue
		}
		found = true
		if c.OK || !strings.Contains(c.Detail, filepath.Dir(missing)) || !strings.Contains(c.Remedy, "aziot-edge") || strings.Contains(c.Remedy, "run 'edge-provisioner provision'") {
			t.Errorf("doctor's config.toml check = %+v, want a failure that asks for aziot-edge", c)
		}
	}
	if !found {
		t.Errorf("doctor has no config.toml check: %+v", checks)
	}
}
