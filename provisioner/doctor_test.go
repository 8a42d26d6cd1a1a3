package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
)

// doctor run before provision, as docs/device-install.md orders: what
// provision will make is "not yet", not a failure, and the enrollment is
// checked with one DPS challenge.
func TestDoctorBeforeProvision(t *testing.T) {
	w := newWorld(t) // the TPM enrolled, nothing provisioned

	out, _, err := runCLI(t, w.env, "doctor", "--json")
	var checks []check
	if jerr := json.Unmarshal([]byte(out), &checks); jerr != nil {
		t.Fatalf("doctor --json: %v\n%s", jerr, out)
	}
	if err != nil {
		t.Errorf("doctor before provisioning = %v, want success: %+v", err, checks)
	}
	byName := map[string]check{}
	for _, c := range checks {
		byName[c.Name] = c
	}
	for _, name := range []string{"hub key", "config.toml", "aziot services"} {
		if c := byName[name]; c.OK || !c.Pending || !strings.Contains(c.Detail, "not provisioned yet") {
			t.Errorf("doctor before provisioning: %q = %+v, want pending, not provisioned yet", name, c)
		}
	}
	if c := byName["DPS enrollment"]; !c.OK || !strings.Contains(c.Detail, w.regID) || !strings.Contains(c.Detail, "IoT Edge") {
		t.Errorf("DPS enrollment = %+v, want it enrolled and a word on the IoT Edge capability", c)
	}

	out, _, err = runCLI(t, w.env, "doctor")
	if err != nil || !strings.Contains(out, "not provisioned yet") || !strings.Contains(out, "TODO  hub key") || !strings.Contains(out, "PASS  DPS enrollment") {
		t.Errorf("doctor before provisioning = %v\n%s", err, out)
	}

	// A TPM that 'identity' never saw: its EK and SRK are still to come,
	// and the enrollment cannot be checked yet.
	fresh := tpmtest.StartSwtpm(t)
	out, _, err = runCLI(t, w.env, "doctor", "--tpm", fresh.URI)
	if err != nil || !strings.Contains(out, "TODO  EK and SRK") || !strings.Contains(out, "TODO  DPS enrollment") {
		t.Errorf("doctor before provisioning on a fresh TPM = %v\n%s", err, out)
	}

	// Another registration ID: DPS does not challenge it.
	out, _, err = runCLI(t, w.env, "doctor", "--registration-id", "someone-else")
	if cli.ExitCode(err) != 1 || !strings.Contains(out, "FAIL  DPS enrollment") || !strings.Contains(out, "edge-provisioner identity") {
		t.Errorf("doctor for an unenrolled registration ID = %v\n%s", err, out)
	}

	// Once provisioned, a missing piece is broken, not pending.
	fakeApplyTool(t, 0)
	if _, progress, err := runCLI(t, w.env, "provision"); err != nil {
		t.Fatalf("provision: %v\n%s", err, progress)
	}
	out, _, _ = runCLI(t, w.env, "doctor", "--aziot-config", w.aziot+".gone")
	if !strings.Contains(out, "FAIL  config.toml") || strings.Contains(out, "not provisioned yet") {
		t.Errorf("doctor after provisioning, config.toml gone:\n%s", out)
	}
}
