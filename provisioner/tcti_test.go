package main

import (
	"os/exec"
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
