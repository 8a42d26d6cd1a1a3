package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
)

// status and doctor on a provisioned bench device.
func TestStatusAndDoctor(t *testing.T) {
	w := newWorld(t)
	fakeApplyTool(t, 0)

	// Before provisioning: TestDoctorBeforeProvision.
	if _, progress, err := runCLI(t, w.env, "provision"); err != nil {
		t.Fatalf("provision: %v\n%s", err, progress)
	}

	out, _, err := runCLI(t, w.env, "doctor")
	if err == nil || !strings.HasPrefix(err.Error(), "1 of ") {
		t.Errorf("doctor after provisioning = %v, want only the aziot services failing\n%s", err, out)
	}
	for _, line := range []string{"PASS  TPM device", "PASS  resource manager", "PASS  EK and SRK", "PASS  hierarchy authorization",
		"PASS  hub key", "PASS  aziot-tpmd TCTI", "PASS  DPS DNS", "PASS  DPS TLS", "PASS  clock", "PASS  DPS enrollment", "PASS  config.toml", "FAIL  aziot services", "PASS  containerd", "remedy: install aziot-edge"} {
		if !strings.Contains(out, line) {
			t.Errorf("doctor has no %q:\n%s", line, out)
		}
	}

	// A DPS whose clock is ten minutes ahead.
	skewed := dpstest.Start(t, dpsemu.Config{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Date", time.Now().Add(10*time.Minute).UTC().Format(http.TimeFormat))
			h.ServeHTTP(rw, r)
		})
	})
	out, _, _ = runCLI(t, w.env, "doctor", "--endpoint", skewed.URL, "--ca-file", skewed.CAFile(t))
	if !strings.Contains(out, "FAIL  clock") || !strings.Contains(out, "timedatectl") {
		t.Errorf("doctor against a skewed DPS:\n%s", out)
	}
	// No CA: TLS is verified and fails.
	out, _, _ = runCLI(t, w.env, "doctor", "--endpoint", skewed.URL, "--ca-file", "")
	if !strings.Contains(out, "FAIL  DPS TLS") {
		t.Errorf("doctor without the lab CA:\n%s", out)
	}

	out, _, err = runCLI(t, w.env, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.TPM.Status == nil || !st.TPM.AuthKey || st.TPM.RegistrationID != w.regID ||
		st.Assignment.Assignment == nil || st.Assignment.DeviceID != "press-7" ||
		st.Config.Provisioning == nil || st.Config.Source != "dps" || st.Config.RegistrationID != w.regID ||
		st.Runtime.Error != "" || len(st.Runtime.Containers) != 2 {
		t.Errorf("status --json = %s", out)
	}
	out, _, err = runCLI(t, w.env, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"registration ID " + w.regID, "as press-7", `source "dps", attestation "tpm"`, "edgeAgent", "edgeHub", "running"} {
		if !strings.Contains(out, want) {
			t.Errorf("status has no %q:\n%s", want, out)
		}
	}
}
