package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgetpm/edgetpm/internal/testharness/peertest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/settings"
)

// The TCTI written into config.toml for each kind of TPM is one that
// tpm2-tss, which aziot-tpmd links, opens: tpm2-tools use the same TCTI
// modules.
func TestAziotTCTIOpensWithTPM2Tools(t *testing.T) {
	getcap := peertest.Need(t, "tpm2_getcap")
	for _, tc := range []struct {
		name string
		uri  func(t *testing.T) string
	}{
		{"swtpm", func(t *testing.T) string { return tpmtest.StartSwtpm(t).URI }},
		{"reference simulator", func(t *testing.T) string { return tpmtest.StartSim(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := settings.TPM{URI: tc.uri(t)}
			tcti, err := s.AziotTCTI()
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), getcap, "-T", tcti, "properties-fixed").CombinedOutput()
			if err != nil {
				t.Errorf("tpm2_getcap -T %s properties-fixed (for %s): %v\n%s", tcti, s.URI, err, out)
			}
		})
	}
}

// doctorCheck runs doctor with args and returns its check called name.
func doctorCheck(t *testing.T, name string, args ...string) check {
	t.Helper()
	args = append([]string{"doctor", "--json", "--endpoint", "https://127.0.0.1:1", "--containerd-address", filepath.Join(t.TempDir(), "none.sock")}, args...)
	out, _, _ := runCLI(t, nil, args...)
	var checks []check
	if err := json.Unmarshal([]byte(out), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("doctor has no %q check: %+v", name, checks)
	return check{}
}

// writeAziotTCTI writes a config.toml whose [tpm] tcti is tcti.
func writeAziotTCTI(t *testing.T, tcti string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	conf := fmt.Sprintf(`[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net"
id_scope = "0ne00000000"

[provisioning.attestation]
method = "tpm"
registration_id = "press-7"

[tpm]
tcti = %q
`, tcti)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// doctor opens the TCTI that config.toml gives aziot-tpmd as tpm2-tss
// would, and tells what to write when it is of the wrong kind; before
// config.toml exists it checks the TCTI provision will write.
func TestDoctorChecksAziotTCTI(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	const name = "aziot-tpmd TCTI"

	c := doctorCheck(t, name, "--tpm", sw.URI, "--aziot-config", writeAziotTCTI(t, sw.TCTI))
	if !c.OK || !strings.Contains(c.Detail, sw.TCTI) {
		t.Errorf("doctor with config.toml's tcti %q = %+v, want a pass naming it", sw.TCTI, c)
	}

	mssim := "mssim" + strings.TrimPrefix(sw.TCTI, "swtpm")
	c = doctorCheck(t, name, "--tpm", sw.URI, "--aziot-config", writeAziotTCTI(t, mssim))
	if c.OK || !strings.Contains(c.Detail, mssim) || !strings.Contains(c.Remedy, sw.TCTI) {
		t.Errorf("doctor with config.toml's tcti %q on swtpm = %+v, want a failure whose remedy writes %q", mssim, c, sw.TCTI)
	}

	missing := filepath.Join(t.TempDir(), "config.toml")
	c = doctorCheck(t, name, "--tpm", sw.URI, "--aziot-config", missing)
	if !c.OK || !strings.Contains(c.Detail, sw.TCTI) {
		t.Errorf("doctor before config.toml exists = %+v, want a pass for the TCTI provision writes, %q", c, sw.TCTI)
	}
}

// doctor's remedy for a TPM that cannot be opened fits the URI's kind:
// firmware and drivers for a device, the simulator's process for the
// others.
func TestDoctorTPMRemedyFitsKind(t *testing.T) {
	for _, tc := range []struct {
		uri       string
		want, not []string
	}{
		{"device:/nonexistent/tpmrm0", []string{"firmware", "tpm_crb"}, nil},
		{"swtpm://127.0.0.1:1", []string{"swtpm socket", "port=2"}, []string{"firmware", "tpm_crb"}},
		{"mssim://127.0.0.1:1", []string{"reference simulator"}, []string{"firmware", "tpm_crb"}},
		// A URI that does not parse is to be fixed, not a panic.
		{"swtpm://[::1", []string{"set tpm.uri"}, []string{"firmware", "tpm_crb"}},
	} {
		c := doctorCheck(t, "TPM device", "--tpm", tc.uri)
		if c.OK {
			t.Errorf("doctor --tpm %s: TPM device passed", tc.uri)
		}
		for _, w := range tc.want {
			if !strings.Contains(c.Remedy, w) {
				t.Errorf("doctor --tpm %s: remedy %q, want it to say %q", tc.uri, c.Remedy, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(c.Remedy, n) {
				t.Errorf("doctor --tpm %s: remedy %q talks of %q", tc.uri, c.Remedy, n)
			}
		}
	}
}
