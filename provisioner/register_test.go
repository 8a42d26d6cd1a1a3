package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgetpm/edgetpm/internal/assignment"
	"github.com/edgetpm/edgetpm/internal/cli"
	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/sas"
	"github.com/edgetpm/edgetpm/internal/testharness/dpstest"
	"github.com/edgetpm/edgetpm/internal/testharness/tpmtest"
	"github.com/edgetpm/edgetpm/provisioner/dps"
	"github.com/edgetpm/edgetpm/provisioner/tpm"
)

// register against the DPS emulator, then a token for the assigned device
// from the saved assignment, checked with the registry's key.
func TestRegisterCommand(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	emu := dpstest.Start(t, dpsemu.Config{RetryAfter: 1}, nil)
	caFile := emu.CAFile(t)
	enroll(t, emu, sw.URI, "line-3")
	payload := filepath.Join(dir, "payload.json")
	os.WriteFile(payload, []byte(`{"line":3}`), 0o600)
	state := filepath.Join(dir, "state", "assignment.json")
	environ := map[string]string{"EDGE_TPM": sw.URI, "EDGE_PROVISIONER_STATE": state}
	register := []string{"register", "--id-scope", emu.IDScope(), "--endpoint", emu.URL, "--ca-file", caFile, "--payload", payload}

	// Without the lab's CA, TLS verification fails and nothing is saved.
	if _, _, err := runCLI(t, environ, "register", "--id-scope", emu.IDScope(), "--endpoint", emu.URL, "--timeout", "3s"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("register without --ca-file = %v, want a certificate error", err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("a failed register left %s: %v", state, err)
	}

	out, progress, err := runCLI(t, environ, append(register, "--json")...)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, progress)
	}
	var res struct {
		dps.Result
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("register --json: %v\n%s", err, out)
	}
	if res.AssignedHub != dpsemu.DefaultHub || res.DeviceID != "line-3" || res.Status != "assigned" || res.Substatus != "initialAssignment" || res.State != state {
		t.Errorf("register --json = %s", out)
	}
	for _, step := range []string{"challenge received", "key activated", "operation", "poll", "assigned"} {
		if !strings.Contains(progress, step) {
			t.Errorf("progress has no %q line:\n%s", step, progress)
		}
	}
	if strings.Contains(progress, "sig=") {
		t.Errorf("progress shows a token:\n%s", progress)
	}
	a, err := assignment.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	if a.AssignedHub != res.AssignedHub || a.DeviceID != "line-3" || a.TPM != sw.URI || a.AuthKeyHandle != uint32(tpm.DefaultAuthKeyHandle) || a.IDScope != emu.IDScope() {
		t.Errorf("saved assignment = %+v", a)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("assignment file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	human, _, err := runCLI(t, environ, register...)
	if err != nil || !strings.Contains(human, "Assigned hub:     "+dpsemu.DefaultHub) || !strings.Contains(human, "Device ID:        line-3") {
		t.Errorf("register = %v\n%s", err, human)
	}

	out, _, err = runCLI(t, environ, "token")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	dev, ok := emu.Registry().Get(a.AssignedHub, a.DeviceID)
	if !ok {
		t.Fatal("the registry has no device")
	}
	if err := tok.MatchAudience(sas.DeviceResource(a.AssignedHub, a.DeviceID)); err != nil {
		t.Error(err)
	}
	if err := tok.Verify(dev.PrimaryKey, time.Now()); err != nil {
		t.Errorf("token from the assignment does not verify with the hub key: %v", err)
	}
}

// enroll enrolls the TPM at uri in the emulator as deviceID and returns
// its registration ID.
func enroll(t testing.TB, emu *dpstest.Server, uri, deviceID string) string {
	t.Helper()
	tp, err := tpm.Open(uri, tpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := tp.Identity(t.Context())
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	emu.EnrollTPM(t, id.RegistrationID, id.EndorsementKey, func(e *dpsservice.Enrollment) { e.DeviceID = deviceID })
	return id.RegistrationID
}

func TestRegisterUsage(t *testing.T) {
	for _, args := range [][]string{
		{"register"},
		{"register", "--id-scope", "s", "extra"},
		{"register", "--id-scope", "s", "--timeout", "0s"},
		{"token", "--tpm", "mssim://127.0.0.1:2321", "--hub", "h"},
	} {
		if _, _, err := runCLI(t, nil, args...); cli.ExitCode(err) != 2 {
			t.Errorf("edge-provisioner %q: exit %d (%v), want 2", args, cli.ExitCode(err), err)
		}
	}
}

// A plain http DPS endpoint, as a flag or in the settings file, is a usage
// error that says why, before any TPM or network access.
func TestRegisterRefusesPlainHTTP(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(conf, []byte("[dps]\nid_scope = \"0ne00000001\"\nendpoint = \"http://dps.local:8443\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		environ map[string]string
		args    []string
	}{
		{nil, []string{"register", "--id-scope", "0ne00000001", "--endpoint", "http://dps.local:8443"}},
		{nil, []string{"register", "--config", conf}},
		{map[string]string{"EDGE_PROVISIONER_CONFIG": conf}, []string{"register"}},
		{map[string]string{"EDGE_PROVISIONER_CONFIG": conf}, []string{"provision", "--dry-run"}},
		{map[string]string{"EDGE_PROVISIONER_CONFIG": conf}, []string{"doctor"}},
	} {
		_, _, err := runCLI(t, tc.environ, tc.args...)
		if cli.ExitCode(err) != 2 || !errors.Is(err, dps.ErrInsecureEndpoint) || !strings.Contains(err.Error(), "in clear") {
			t.Errorf("edge-provisioner %q (env %v) = exit %d, %v; want exit 2 refusing plain http", tc.args, tc.environ, cli.ExitCode(err), err)
		}
	}
}

// register leaves a hub identity set by hand alone without --force, as
// identity set leaves a DPS key alone; with --force DPS's key replaces it.
func TestRegisterRefusesHubIdentity(t *testing.T) {
	f := newHubFixture(t)
	key := f.createDevice(t, "press-7")
	if _, err := f.cli(t, f.connectionString("press-7", key), nil, "identity", "set", "--connection-string-file", "-"); err != nil {
		t.Fatal(err)
	}
	emu := dpstest.Start(t, dpsemu.Config{RetryAfter: 1}, nil)
	enroll(t, emu, f.sw.URI, "line-3")
	register := []string{"register", "--id-scope", emu.IDScope(), "--endpoint", emu.URL, "--ca-file", emu.CAFile(t)}
	before := f.snapshot(t)
	_, err := f.cli(t, "", nil, register...)
	if !errors.Is(err, errHubIdentity) || !strings.Contains(err.Error(), "identity clear") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("register over a hub identity = %v, want errHubIdentity naming identity clear and --force", err)
	}
	if after := f.snapshot(t); after != before {
		t.Errorf("the refused register changed the TPM:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := os.Stat(f.state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused register saved an assignment: %v", err)
	}
	if code := f.connectWithToken(t, "press-7"); code != 0 {
		t.Errorf("CONNECT with the hub identity after the refused register: CONNACK %d, want 0", code)
	}

	if _, err := f.cli(t, "", nil, append(register, "--force")...); err != nil {
		t.Fatalf("register --force: %v", err)
	}
	if got := f.hubIdentity(t); got != nil {
		t.Errorf("hub identity after register --force = %+v, want none", got)
	}
	if a, err := assignment.Load(f.state); err != nil || a.DeviceID != "line-3" {
		t.Errorf("assignment after register --force = %+v, %v", a, err)
	}
}
